/**
 * The Debian OS base with the real tools: mmdebstrap in a user namespace (never as real root), an
 * ext4 image made without mounting, read back with debugfs, and booted under QEMU until its
 * readiness agent answers on the vse port. The base is built once and kept under
 * /var/cache/vse/test-debian/<key> (the key changes with the spec and with the builder).
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DebianBase, type DebianSpec, buildDebian, copyInAsRoot, debianCacheKey, hookArgument, loadDebian } from '../../lib/configure/debian.js';
import { qemuDriver } from '../../lib/deploy/driver.js';
import { isAlive, isSameProcess, terminate } from '../../lib/deploy/proc.js';
import { GuestAgent } from '../../lib/guest/qga.js';
import { waitReady } from '../../lib/guest/ready.js';
import { UserError } from '../../lib/util/errors.js';
import { createLogger, silentLogger } from '../../lib/util/log.js';
import { run } from '../../lib/util/run.js';
import { qemuMentioning } from './env.js';

const CACHE = '/var/cache/vse/test-debian';
const log = createLogger({ tag: 'debian-test', verbose: false });

/** variant "required" brings tzdata (removable) and e2fsprogs, whose e2scrub_reap.service is enabled by default. */
const SPEC: DebianSpec = {
  release: 'bookworm',
  variant: 'required',
  kernelPackage: 'linux-image-cloud-amd64',
  packages: [
    { name: 'htop', state: 'present' },
    { name: 'tzdata', state: 'absent' },
    { name: 'nano', state: 'absent' },
  ],
  services: [{ name: 'e2scrub_reap.service', state: 'disabled' }],
  diskMiB: 1024,
};

/** Callers' hooks, as the configuration tools use them: a file copied in, a command run in the new system. */
const HOOK_INPUT = join(CACHE, 'hook-input', 'hello.txt');
const HOOKS = [...copyInAsRoot([HOOK_INPUT], '/opt'), ['chroot', '$1', 'sh', '-c', 'echo "built by $(id -u)" > /opt/hook-ran']];

let base: DebianBase;
let scratch: string;

beforeAll(async () => {
  mkdirSync(CACHE, { recursive: true, mode: 0o755 });
  scratch = mkdtempSync(join(tmpdir(), 'vse-debian-test-'));
  // copy-in reads its source as the build's namespace root, an "other" user on the host
  mkdirSync(dirname(HOOK_INPUT), { recursive: true, mode: 0o755 });
  writeFileSync(HOOK_INPUT, 'hello from the host\n', { mode: 0o644 });
  const dir = join(CACHE, debianCacheKey(SPEC, HOOKS));
  if (existsSync(join(dir, 'result.json'))) {
    base = loadDebian(dir);
    console.log(`Debian base reused from ${dir} (built in ${(base.buildMs / 1000).toFixed(1)} s)`);
    return;
  }
  const started = Date.now();
  const progress: string[] = [];
  base = await buildDebian(SPEC, { outDir: dir, workDir: join(CACHE, 'work'), log, customizeHooks: HOOKS, onProgress: (l) => progress.push(l) });
  expect(progress).toContain('vse: removing packages: tzdata nano ');
  expect(progress.some((l) => l.startsWith('I: '))).toBe(true);
  console.log(`Debian base built in ${((Date.now() - started) / 1000).toFixed(1)} s into ${dir}`);
}, 900_000);

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

/** Run debugfs requests against the image (a raw copy of the qcow2): what each printed (stdout and stderr). */
async function debugfs(requests: string[]): Promise<Map<string, string>> {
  const raw = join(scratch, 'root.raw');
  if (!existsSync(raw)) await run(['qemu-img', 'convert', '-O', 'raw', base.disk, raw]);
  const out = new Map<string, string>();
  for (const req of requests) {
    const r = await run(['debugfs', '-R', req, raw]);
    out.set(req, `${r.stdout}${r.stderr.replace(/^debugfs [\d.]+ \(.*\)\n/, '')}`);
  }
  return out;
}

const owner = (stat: string | undefined): string => /User:\s+(\d+)\s+Group:\s+(\d+)/.exec(stat ?? '')?.slice(1, 3).join(':') ?? `(no inode: ${stat})`;
const mode = (stat: string | undefined): string => /Mode:\s+(\d+)/.exec(stat ?? '')?.[1] ?? '(none)';

describe('the Debian base', () => {
  it('installs what the spec asks, removes what it forbids, and records every package with its version', () => {
    const names = base.packages.map((p) => p.name);
    for (const p of ['htop', 'systemd-sysv', 'udev', 'qemu-guest-agent', 'linux-image-cloud-amd64', base.kernelPackage]) expect(names).toContain(p);
    expect(names).not.toContain('tzdata');
    expect(names).not.toContain('nano');
    for (const p of base.packages) expect(p.version).toMatch(/^\S+$/);
    expect(base.kernelPackage).toMatch(/^linux-image-\d.*-cloud-amd64$/);
    expect(readFileSync(join(base.disk, '..', 'packages.txt'), 'utf8')).toMatch(/^htop\t\S+$/m);
    for (const f of [base.kernel, base.initrd, base.disk]) expect(existsSync(f)).toBe(true);
    expect(base.cmdline).toMatch(/^console=ttyS0 .*root=\/dev\/vda .*rw/);
    expect(base.cmdline).toContain('panic=-1');
    // the build log is mmdebstrap's own output, with our steps in it
    expect(base.log).toContain('I: success in');
    expect(base.log).toContain('vse: removing packages: tzdata nano');
    expect(base.log).toMatch(/Created symlink \/etc\/systemd\/system\/multi-user\.target\.wants\/e2scrub_reap\.service/);
    expect(base.log).toMatch(/Removed "\/etc\/systemd\/system\/multi-user\.target\.wants\/e2scrub_reap\.service"/);
  });

  it('is an ext4 image with the files root-owned (and other owners kept), the agent enabled, the service disabled', async () => {
    const r = await debugfs([
      'stat /usr/bin/htop', 'stat /usr/lib/vse/setup.sh', 'stat /usr/lib/vse/vse-task', 'stat /usr/sbin/dropbear', 'stat /etc/systemd/system/vse-ready.service',
      'ls -l /etc/systemd/system/multi-user.target.wants', 'stat /lib/systemd/system/e2scrub_reap.service',
      'stat /usr/share/zoneinfo', 'stat /usr/bin/nano', 'stat /var/cache/apt/archives/partial', 'stat /usr/bin/passwd',
      'cat /etc/fstab', 'stat /etc/systemd/system/serial-getty@ttyS0.service', 'stat /boot/vmlinuz-' + base.kernelVersion,
      'stat /opt/hello.txt', 'cat /opt/hello.txt', 'cat /opt/hook-ran',
    ]);
    // the callers' hooks ran, in the new system, as its root
    expect(owner(r.get('stat /opt/hello.txt'))).toBe('0:0');
    expect(r.get('cat /opt/hello.txt')).toBe('hello from the host\n');
    expect(r.get('cat /opt/hook-ran')).toBe('built by 0\n');
    expect(owner(r.get('stat /usr/bin/htop'))).toBe('0:0');
    expect(owner(r.get('stat /usr/lib/vse/setup.sh'))).toBe('0:0');
    expect(mode(r.get('stat /usr/lib/vse/vse-task'))).toBe('0755');
    expect(owner(r.get('stat /usr/sbin/dropbear'))).toBe('0:0');
    expect(mode(r.get('stat /usr/lib/vse/setup.sh'))).toBe('0755');
    expect(owner(r.get('stat /etc/systemd/system/vse-ready.service'))).toBe('0:0');
    expect(owner(r.get(`stat /boot/vmlinuz-${base.kernelVersion}`))).toBe('0:0');
    // ids other than root survive the namespace (apt's _apt is 42), and so do setuid bits
    expect(owner(r.get('stat /var/cache/apt/archives/partial'))).toBe('42:0');
    expect(mode(r.get('stat /usr/bin/passwd'))).toBe('04755');
    const wants = r.get('ls -l /etc/systemd/system/multi-user.target.wants') ?? '';
    expect(wants).toContain('vse-ready.service');
    expect(wants).not.toContain('e2scrub_reap.service');
    expect(owner(r.get('stat /lib/systemd/system/e2scrub_reap.service'))).toBe('0:0'); // installed, only disabled
    expect(r.get('stat /usr/share/zoneinfo')).toContain('File not found'); // tzdata purged
    expect(r.get('stat /usr/bin/nano')).toContain('File not found');
    expect(r.get('cat /etc/fstab')).toMatch(/^\/dev\/vda \/ ext4 /m);
    expect(r.get('stat /etc/systemd/system/serial-getty@ttyS0.service')).toContain('Fast link dest: "/dev/null"'); // masked
  });

  /** The VM the next two tests share (started by the first, stopped by the second or by afterAll). */
  const vmDir = (): string => join(scratch, 'vm');
  const name = 'deb-test-0';
  let qemuPid: number | undefined;

  it('boots under QEMU (TCG) with a copy-on-write overlay and announces itself on the vse port', async () => {
    const dir = vmDir();
    mkdirSync(dir, { mode: 0o750 });
    const overlay = join(dir, 'vm0.qcow2');
    const pidFile = join(dir, 'vm0.pid');
    const consoleLog = join(dir, 'vm0.console.log');
    const channelSocket = join(dir, 'vm0.chan');
    await run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', base.disk, overlay]);
    const started = Date.now();
    const up = await qemuDriver.start({
      name, accel: 'tcg', memoryMiB: 256, vcpus: 1, kernel: base.kernel, initrd: base.initrd, cmdline: `${base.cmdline} vse.hostname=${name}`,
      overlay, qmpSocket: join(dir, 'vm0.qmp'), channelSocket, agentSocket: join(dir, 'vm0.qga'), consoleLog, pidFile, qemuLog: join(dir, 'vm0.qemu.log'),
      runAs: process.getuid?.() === 0 ? 'nobody' : undefined, sandbox: true,
    }, silentLogger, true);
    if (up === 'portTaken') throw new Error('no port was forwarded, none can be taken');
    const { pid, startTime } = up;
    qemuPid = pid;
    expect(Number(readFileSync(pidFile, 'utf8').trim())).toBe(pid);
    await waitReady({ name, channelSocket, consoleLog, timeoutMs: 150_000, check: () => (isSameProcess(pid, startTime) ? undefined : 'QEMU exited during boot') });
    console.log(`Debian guest ready in ${((Date.now() - started) / 1000).toFixed(2)} s (TCG, 256 MiB)`);
    expect(readFileSync(consoleLog, 'utf8')).toContain(`vse-guest: ready ${name}`); // the hostname was set from vse.hostname=
    // the base image is untouched: the guest writes to its overlay only
    const info = JSON.parse((await run(['qemu-img', 'info', '-U', '--output=json', overlay])).stdout) as { 'backing-filename'?: string };
    expect(info['backing-filename']).toBe(base.disk);
  });

  it('inside, through qemu-guest-agent (part of the base), it is what was asked for, and powers off when asked', async () => {
    const pid = qemuPid;
    if (pid === undefined || !isAlive(pid)) throw new Error('the guest of the previous test is not running');
    const agent = await GuestAgent.open(join(vmDir(), 'vm0.qga'), 60_000);
    try {
      const sh = async (...argv: string[]): Promise<{ code: number | null; out: string }> => {
        const x = await agent.exec(argv, { timeoutMs: 60_000 });
        return { code: x.exitCode, out: x.stdout.trim() };
      };
      expect(await sh('hostname')).toEqual({ code: 0, out: name });
      expect(await sh('findmnt', '-n', '-o', 'SOURCE,FSTYPE', '/')).toEqual({ code: 0, out: expect.stringMatching(/^\/dev\/vda\s+ext4$/) });
      expect(await sh('dpkg-query', '-W', '-f=${Status}', 'htop')).toEqual({ code: 0, out: 'install ok installed' });
      expect((await sh('dpkg-query', '-W', 'tzdata')).code).not.toBe(0);
      expect(await sh('systemctl', 'is-enabled', 'e2scrub_reap.service')).toEqual({ code: 1, out: 'disabled' });
      expect(await sh('systemctl', 'is-active', 'vse-ready.service')).toEqual({ code: 0, out: 'active' });
      expect(await sh('cat', '/opt/hook-ran')).toEqual({ code: 0, out: 'built by 0' });
      expect(await sh('stat', '-c', '%u:%g %a', '/usr/bin/htop')).toEqual({ code: 0, out: '0:0 755' });
      // a clean poweroff ends QEMU (the connection stays open until then: closing at once may drop the request)
      const asked = Date.now();
      agent.shutdown();
      while (isAlive(pid) && Date.now() - asked < 90_000) await new Promise((r) => setTimeout(r, 100));
      expect(isAlive(pid), `QEMU still running ${(Date.now() - asked) / 1000} s after guest-shutdown`).toBe(false);
      console.log(`Debian guest powered off in ${((Date.now() - asked) / 1000).toFixed(2)} s`);
    } finally {
      agent.close();
    }
  });

  afterAll(async () => {
    if (qemuPid !== undefined) await terminate(qemuPid);
    expect(qemuMentioning(vmDir())).toEqual([]);
  });
});

describe('failures', () => {
  it('a package that does not exist fails with an error naming it, and leaves no output and no scratch behind', async () => {
    const parent = mkdtempSync(join(CACHE, 'fail-'));
    chmodSync(parent, 0o755); // the build's namespace root is an "other" user: it must pass through
    const outDir = join(parent, 'out');
    const workDir = join(parent, 'work');
    try {
      const spec: DebianSpec = { ...SPEC, variant: 'apt', packages: [{ name: 'htop', state: 'present' }, { name: 'vse-no-such-package', state: 'present' }], services: [] };
      const err = await buildDebian(spec, { outDir, workDir, log }).then(() => undefined, (e: unknown) => e);
      expect(err, String(err)).toBeInstanceOf(UserError);
      expect((err as Error).message).toMatch(/^package "vse-no-such-package" does not exist in Debian bookworm \(/);
      expect((err as Error).message).toContain('--- last lines of the build log ---');
      expect((err as Error).message).toContain('E: Unable to locate package vse-no-such-package');
      expect(existsSync(outDir)).toBe(false);
      expect(readdirSync(parent).filter((f) => f !== 'work')).toEqual([]); // no .out.part-* either
      expect(readdirSync(workDir)).toEqual([]);
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  });

  it('names that are not Debian package or unit names are refused before anything runs', async () => {
    const o = { outDir: join(scratch, 'never'), workDir: join(scratch, 'never-work'), log };
    await expect(buildDebian({ ...SPEC, packages: [{ name: 'htop;reboot', state: 'present' }] }, o)).rejects.toThrow(/package "htop;reboot": not a Debian package name/);
    await expect(buildDebian({ ...SPEC, packages: [{ name: '-oAPT::x=1', state: 'absent' }] }, o)).rejects.toThrow(/not a Debian package name/);
    await expect(buildDebian({ ...SPEC, services: [{ name: '$(reboot)', state: 'enabled' }] }, o)).rejects.toThrow(/service "\$\(reboot\)": not a systemd unit name/);
    await expect(buildDebian({ ...SPEC, packages: [{ name: 'udev', state: 'absent' }] }, o)).rejects.toThrow(/package udev cannot be absent/);
    await expect(buildDebian({ ...SPEC, mirror: 'http://x/ bookworm main\ndeb http://evil' }, o)).rejects.toThrow(/os mirror/);
    expect(existsSync(o.outDir)).toBe(false);
    expect(existsSync(o.workDir)).toBe(false);
  });

  it('callers\' hooks are argv arrays: words are quoted, only a bare $1 means the root directory', () => {
    expect(hookArgument(['chroot', '$1', 'sh', '-c', 'echo $HOME; touch /x'])).toBe(`chroot "$1" sh -c 'echo $HOME; touch /x'`);
    expect(hookArgument(['copy-in', '/tmp/a b', '/opt'])).toBe(`copy-in '/tmp/a b' /opt`);
    expect(hookArgument(['echo', "it's"])).toBe(`echo 'it'\\''s'`);
  });
});
