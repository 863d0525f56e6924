/**
 * The QEMU driver's start, with a real QEMU: detached by setsid (slurmd's kill of the prolog's
 * process group cannot reach it), up once its monitor answers; a forwarded port someone
 * else holds is told apart from other failures, and a failure says what QEMU said.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { type Server, createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Configuration, ensureMinimalGuest } from '../../lib/configure/minimal.js';
import { freePort } from '../../lib/deploy/deploy.js';
import { qemuDriver } from '../../lib/deploy/driver.js';
import { isAlive, terminate } from '../../lib/deploy/proc.js';
import type { QemuVmSpec } from '../../lib/deploy/qemu.js';
import { loadSiteConfig } from '../../lib/site/config.js';
import { silentLogger } from '../../lib/util/log.js';
import { qemuMentioning, sidOf, testSite } from './env.js';

const site = testSite();
const dir = mkdtempSync('/tmp/vse-driver-');
let config: Configuration;
let holder: Server;
let heldPort: number;
const started: number[] = [];

beforeAll(async () => {
  process.env.VSE_SITE_CONFIG = site.file;
  const s = loadSiteConfig();
  config = await ensureMinimalGuest({ cacheDir: s.cacheDir, kernelPackage: s.kernelPackage, log: silentLogger });
  // a port another process holds on 127.0.0.1, where QEMU forwards the guest's SSH port
  holder = createServer();
  heldPort = await new Promise<number>((resolve) => holder.listen(0, '127.0.0.1', () => resolve((holder.address() as { port: number }).port)));
});

afterAll(async () => {
  for (const pid of started) await terminate(pid);
  holder.close();
  rmSync(dir, { recursive: true, force: true });
});

const spec = (n: string, sshPort: number): QemuVmSpec => ({
  name: `drv-${n}`, accel: 'tcg', tcgCacheMiB: 32, memoryMiB: 128, vcpus: 1, kernel: config.kernel, initrd: config.initrd, cmdline: `${config.cmdline} vse.hostname=drv-${n}`,
  qmpSocket: join(dir, `${n}.qmp`), channelSocket: join(dir, `${n}.chan`), consoleLog: join(dir, `${n}.console.log`), pidFile: join(dir, `${n}.pid`),
  qemuLog: join(dir, `${n}.qemu.log`), sandbox: true, runAs: process.getuid?.() === 0 ? 'nobody' : undefined, mgmt: { mac: '52:54:00:12:34:56', sshPort },
});

describe('the QEMU driver starts a VM', () => {
  it('detached: QEMU is setsid\'s leader, wrote its pid file, and runs once start returns', async () => {
    const r = await qemuDriver.start(spec('a', await freePort()), silentLogger, true);
    if (r === 'portTaken') throw new Error('a free port was taken');
    started.push(r.pid);
    expect(isAlive(r.pid)).toBe(true);
    expect(sidOf(r.pid)).toBe(r.pid);
    expect(sidOf(r.pid)).not.toBe(sidOf(process.pid));
    expect(Number(readFileSync(join(dir, 'a.pid'), 'utf8').trim())).toBe(r.pid);
    expect(readFileSync(`/proc/${r.pid}/cmdline`, 'utf8').split('\0')).not.toContain('-daemonize');
  });
  it('a forwarded port someone holds: "port taken" (deploy tries another), and nothing left running', async () => {
    const r = await qemuDriver.start(spec('b', heldPort), silentLogger, false);
    expect(r).toBe('portTaken');
    expect(readFileSync(join(dir, 'b.qemu.log'), 'utf8')).toMatch(/host forwarding|Address already in use/i);
    expect(qemuMentioning(join(dir, 'b.'))).toEqual([]);
  });
  it('on the last try, or for any other failure, an error with what QEMU said', async () => {
    await expect(qemuDriver.start(spec('c', heldPort), silentLogger, true)).rejects.toThrow(/QEMU failed to start VM drv-c \(exit code 1\):[\s\S]*(host forwarding|Address already in use)/i);
    // a kernel that is not there: not a port problem, whatever the try
    await expect(qemuDriver.start({ ...spec('d', await freePort()), kernel: join(dir, 'no-such-kernel') }, silentLogger, false)).rejects.toThrow(/QEMU failed to start VM drv-d[\s\S]*no-such-kernel/);
  });
});
