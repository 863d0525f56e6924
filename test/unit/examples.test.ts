/** The shipped examples and base descriptions stay valid with the shipped site config. */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { formatProblem } from '../../lib/descriptor/problem.js';
import { resolveDescription } from '../../lib/descriptor/resolve.js';
import { shippedConfigDir } from '../../lib/site/paths.js';
import type { SiteConfig } from '../../lib/site/config.js';

const root = join(import.meta.dirname, '../..');
const site: SiteConfig = {
  stateDir: '/tmp/x', cacheDir: '/tmp/x', logDir: '/tmp/x', qemuUser: 'nobody', kernelPackage: 'linux-image-cloud-amd64', accel: 'auto', tcgCacheMiB: 32, bootTimeoutSec: 120,
  limits: { maxMemoryMiB: 4096, maxVcpus: 8, maxVmsPerNode: 16, maxDiskMiB: 65536, maxMemoryPerNodeMiB: 16384 },
  allowedHypervisors: ['qemu', 'libvirt'], allowedHostPaths: [], descriptionDirs: [join(shippedConfigDir, 'descriptions')], sources: ['config/site.json'],
};

const files = [
  ...readdirSync(join(root, 'config/descriptions')).map((f) => `config/descriptions/${f}`),
  ...readdirSync(join(root, 'examples')).filter((f) => f.endsWith('.xml')).map((f) => `examples/${f}`),
  ...readdirSync(join(root, 'examples/layered')).filter((f) => f.endsWith('.xml')).map((f) => `examples/layered/${f}`),
];

describe('shipped descriptions', () => {
  it.each(files)('%s resolves without problems', (f) => {
    const r = resolveDescription(join(root, f), site, { checkReadable: true });
    expect(r.problems.map(formatProblem)).toEqual([]);
  });
});
