import { describe, expect, it } from 'vitest';
import { slurmContext } from '../../lib/rm/slurm.js';
import { jobDir } from '../../lib/deploy/state.js';
import { parseSize } from '../../lib/util/size.js';

const env = {
  SLURM_JOB_ID: '123', SLURMD_NODENAME: 'n2', SLURM_JOB_UID: '1001', SLURM_JOB_GID: '1001', SLURM_JOB_USER: 'alice',
  SPANK_VSE_DESC: '{"name":"x"}', SPANK_VSE_FILE: '/home/alice/x.xml',
};

describe('the Slurm job context', () => {
  it('comes from the variables slurmd gives Prolog and Epilog', () => {
    expect(slurmContext(env)).toEqual({
      jobId: '123', node: 'n2', uid: 1001, gid: 1001, user: 'alice', descriptionJson: '{"name":"x"}',
      descriptionFile: '/home/alice/x.xml', scheduler: 'slurm',
    });
  });
  it('keys per-node state by job and node, since several nodes can share a host', () => {
    expect(jobDir('/run/vse', '123', 'n2')).toBe('/run/vse/jobs/123.n2');
  });
  it.each([
    ['SLURM_JOB_ID', '../etc'], ['SLURMD_NODENAME', 'n1/../../x'], ['SLURMD_NODENAME', ''],
  ])('refuses %s=%j as a path component', (k, v) => {
    expect(() => slurmContext({ ...env, [k]: v })).toThrow(/is not usable/);
  });
  it('needs numeric uid and gid', () => {
    expect(() => slurmContext({ ...env, SLURM_JOB_UID: 'root' })).toThrow('SLURM_JOB_UID is missing or not a number');
  });
});

describe('sizes', () => {
  it.each([['128M', 128], ['2G', 2048], ['1.5GiB', 1536], ['512MB', 512], ['1T', 1048576], ['64k', 0]])('%s is %d MiB', (s, mib) => {
    expect(parseSize(s)).toBe(mib);
  });
  it.each(['512', 'lots', '-1G', '1X'])('%s is not a size', (s) => expect(parseSize(s)).toBeUndefined());
});
