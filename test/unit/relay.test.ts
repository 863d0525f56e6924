/**
 * Slurm tasks relayed into a job's VMs (lib/guest/relay.ts), the parts that need no VM: which VM a
 * task gets, where it starts, who it is, and what it says when the job's VMs are not there.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { PassThrough, Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { guestPathOf } from '../../lib/deploy/shares.js';
import { jobDir, makeJobDir, writeFailedRecord, writeRecord } from '../../lib/deploy/state.js';
import { relayTask, taskCwd } from '../../lib/guest/relay.js';
import { slurmTask, vmOfTask } from '../../lib/rm/task.js';
import { HostError, UserError } from '../../lib/util/errors.js';

const tmp = mkdtempSync('/tmp/vse-unit-relay-');
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const me = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
const taskEnv = (over: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv => ({ SLURM_JOB_ID: '12', SLURMD_NODENAME: 'n1', SLURM_STEP_ID: '0', SLURM_LOCALID: '1', SLURM_PROCID: '3', ...over });

describe('a Slurm task', () => {
  it('is known by the environment slurmstepd gives it', () => {
    expect(slurmTask(taskEnv())).toEqual({ job: '12', node: 'n1', step: '0', localId: 1, procId: 3 });
    expect(slurmTask(taskEnv({ SLURM_LOCALID: undefined }), true)).toEqual({ job: '12', node: 'n1', step: 'batch', localId: 0, procId: 0 });
    expect(() => slurmTask({})).toThrow(/SLURM_JOB_ID is not set/);
    expect(() => slurmTask(taskEnv({ SLURM_LOCALID: 'x' }))).toThrow(/SLURM_LOCALID is "x"; expected a task id/);
    expect(() => slurmTask(taskEnv({ SLURMD_NODENAME: '../n1' }))).toThrow(UserError);
  });

  it.each([[0, 1, 0], [3, 1, 0], [0, 2, 0], [1, 2, 1], [2, 2, 0], [5, 4, 1]])('local task %d of %d VMs per node runs on VM %d (task mod VMs)', (task, vms, want) => {
    expect(vmOfTask(task, vms)).toBe(want);
  });
});

describe('the directory a task starts in', () => {
  const shares = [{ host: '/lustre', guest: '/lustre' }, { host: '/lustre/alice/proj', guest: '/proj' }, { host: '/home/alice/data', guest: '/data/' }];
  it.each([
    ['/lustre/alice/run', '/lustre/alice/run'],
    ['/lustre', '/lustre'],
    ['/lustre/alice/proj/a/b', '/proj/a/b'],
    ['/home/alice/data', '/data/'],
    ['/home/alice/data/x', '/data/x'],
    ['/lustre2/x', undefined],
    ['/home/alice', undefined],
  ])('%s is %s in the guest', (host, guest) => {
    expect(guestPathOf(shares, host)).toBe(guest);
  });
  it('is the same place when a share covers it, else the user\'s home in the guest', () => {
    expect(taskCwd({ user: 'alice', uid: 1000 }, shares, '/lustre/alice/run')).toBe('/lustre/alice/run');
    expect(taskCwd({ user: 'alice', uid: 1000 }, shares, '/home/alice/src')).toBe('/home/alice');
    expect(taskCwd({ user: 'root', uid: 0 }, [], '/root/x')).toBe('/root');
  });
});

describe('a task whose VMs are not there', () => {
  const io = () => ({ stdin: Readable.from([]), stdout: new PassThrough(), stderr: new PassThrough() });
  const ctx = { job: '12', node: 'n1', uid: me.uid, gid: me.gid, user: 'alice', scheduler: 'slurm' };

  it('fails naming the task and the node (the prolog deployed nothing here)', async () => {
    const stateDir = mkdtempSync(`${tmp}/state-`);
    const r = relayTask({ stateDir, mode: 'task', argv: ['/usr/bin/hostname'], env: taskEnv(), cwd: '/' }, io());
    await expect(r).rejects.toThrow(UserError);
    await expect(r).rejects.toThrow(/^vse: task 3 \(step 12\.0 on n1\) cannot run in the job's VMs: job 12 has no VMs on this host for node n1.*hint: the prolog's log/);
  });

  it('fails with the prolog\'s reason when a mistake of the user stopped it', async () => {
    const stateDir = mkdtempSync(`${tmp}/state-`);
    writeFailedRecord(stateDir, ctx, 'app.xml:3:7: /vse/vm/@perNode: VMs per node 99 exceeds the site limit; expected at most 16');
    const r = relayTask({ stateDir, mode: 'batch', argv: ['/spool/slurm_script'], env: taskEnv(), cwd: '/' }, io());
    await expect(r).rejects.toThrow(/^vse: the batch script of job 12 \(on n1\) cannot run in the job's VMs: the VMs of job 12 on n1 were not deployed: app\.xml:3:7: .*exceeds the site limit/);
  });

  it('fails as the host\'s problem when its VM is gone', async () => {
    const stateDir = mkdtempSync(`${tmp}/state-`);
    const dir = jobDir(stateDir, '12', 'n1');
    makeJobDir(dir, me.gid);
    const vm = (index: number) => ({
      index, name: `12-n1-${index}`, state: 'ready' as const, pid: 999_999_999, startTime: 1, memoryMiB: 128, vcpus: 1, sshPort: 1, hostKey: 'ssh-ed25519 AAAA',
      overlay: '', qmpSocket: '', channelSocket: '', consoleLog: `${dir}/vm${index}.console.log`, pidFile: '',
    });
    writeRecord({ version: 1, ...ctx, dir, state: 'ready', createdAt: '', description: { name: 'x' }, driver: 'qemu', keyFile: `${dir}/key`, vms: [vm(0), vm(1)] });
    const r = relayTask({ stateDir, mode: 'task', argv: ['true'], env: taskEnv(), cwd: '/' }, io());
    await expect(r).rejects.toThrow(HostError);
    // local task 1 of 2 VMs: VM 1
    await expect(r).rejects.toThrow(/task 3 \(step 12\.0 on n1\) cannot run in the job's VMs: VM 12-n1-1 is not running/);
  });
});
