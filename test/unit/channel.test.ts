/**
 * The guest channel's pieces that need no VM: the request vse-task decodes (run here, on the host,
 * it behaves as in a guest), ready-line parsing, the network part of the QEMU command line, the
 * kernel command line the guest's setup reads, and `vse exec`'s argument parsing.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MAX_COMMAND, encodeRequest, guestEnvironment, signalCommand, taskCommand, taskEnvironment, taskInvocation } from '../../lib/guest/request.js';
import { parseReady } from '../../lib/guest/ready.js';
import { MGMT_MAC, jobNetMac, qemuArgs } from '../../lib/deploy/qemu.js';
import { jobAddress, networkNames } from '../../lib/deploy/net.js';
import { guestCmdline } from '../../lib/deploy/deploy.js';
import { parseExecArgs } from '../../lib/cli/commands.js';

const TASK = resolve(import.meta.dirname, '../../build/guest/vse-task');
const tmp = mkdtempSync('/tmp/vse-unit-channel-');
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const req = (argv: string[], over: Partial<Parameters<typeof encodeRequest>[0]> = {}) => ({
  id: '0123456789abcdef', uid: 0, gid: 0, cwd: tmp, env: ['PATH=/usr/bin:/bin', 'X=1'], argv, ...over,
});

function task(b64: string, input?: string): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
  const r = spawnSync(TASK, [b64], { encoding: 'utf8', ...(input !== undefined ? { input } : {}) });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

describe('vse-task (built by make build; the same binary runs in every guest)', () => {
  it('exists', () => expect(existsSync(TASK)).toBe(true));

  it('runs argv as given, with exactly the environment asked for, and passes the exit code back', () => {
    const r = task(encodeRequest(req(['sh', '-c', 'printf "%s|" "$@" "$X" "${HOME:-nohome}" "$PWD"; exit 7', 'sh', 'a b', '$(id)', "'"])));
    expect(r.status).toBe(7);
    expect(r.stdout).toBe(`a b|$(id)|'|1|nohome|${tmp}|`);
  });

  it('drops to the uid and gid asked for', () => {
    const nobody = Number(spawnSync('id', ['-u', 'nobody'], { encoding: 'utf8' }).stdout.trim());
    const r = task(encodeRequest(req(['id', '-u'], { uid: nobody, gid: nobody })));
    expect(r.stdout.trim()).toBe(String(nobody));
  });

  it('ends by the signal that ended the command', () => {
    expect(task(encodeRequest(req(['sh', '-c', 'kill -USR2 $$']))).signal).toBe('SIGUSR2');
  });

  it('goes to /tmp with slurmstepd\'s message when the directory is missing; 127 for a missing command', () => {
    const r = task(encodeRequest(req(['no-such-command-x'], { cwd: '/nonexistent' })));
    expect(r.status).toBe(127);
    expect(r.stderr).toContain("couldn't chdir to `/nonexistent': No such file or directory: going to /tmp instead");
    expect(r.stderr).toContain('vse-task: no-such-command-x: No such file or directory');
  });

  it('finds a command named by a system directory it is not in by its name on PATH (srun names /usr/bin/hostname; busybox has /bin/hostname)', () => {
    const r = task(encodeRequest(req(['/usr/local/sbin/sh', '-c', 'echo "found as $0"'])));
    expect(r).toMatchObject({ status: 0, stdout: 'found as /usr/local/sbin/sh\n' });
    // anywhere else, a missing path stays missing
    expect(task(encodeRequest(req(['/opt/nowhere/sh', '-c', 'true']))).status).toBe(127);
    expect(task(encodeRequest(req(['/usr/local/sbin/sub/sh', '-c', 'true']))).status).toBe(127);
  });

  it('takes a request too long for a command line from stdin (-LEN), and gives the rest of stdin to the command', () => {
    const big = 'x'.repeat(20_000);
    const inv = taskInvocation(req(['sh', '-c', 'echo ${#BIG}; cat'], { env: ['PATH=/usr/bin:/bin', `BIG=${big}`] }));
    expect(inv.command).toMatch(/^\/usr\/lib\/vse\/vse-task -\d+$/);
    expect(inv.command.length).toBeLessThanOrEqual(MAX_COMMAND);
    const r = task(inv.command.split(' ')[1] as string, `${inv.stdinPrefix?.toString() ?? ''}rest of stdin\n`);
    expect(r).toMatchObject({ status: 0, stdout: '20000\nrest of stdin\n' });
    // small requests stay on the command line
    expect(taskInvocation(req(['true'])).stdinPrefix).toBeUndefined();
    expect(task('-100', 'short').stderr).toContain('the request ended early on stdin');
  });

  it('refuses what is not a request', () => {
    expect(task('not base64!').status).toBe(125);
    expect(task(Buffer.from('hello\0').toString('base64')).stderr).toContain('not a vse-task-1 request');
    expect(() => encodeRequest(req(['a\0b']))).toThrow(/NUL/);
    expect(() => encodeRequest(req(['x'], { id: '../../etc' }))).toThrow(/16 hex/);
  });

  it('a signal request reaches the running command\'s whole process group, which goes with it', async () => {
    const id = 'feedfacecafe0001';
    const marker = join(tmp, 'child-alive');
    const child = spawn(TASK, [encodeRequest(req(['sh', '-c', `(trap '' TERM; sleep 30; touch ${marker}) & exec sleep 31`], { id }))]);
    const ended = new Promise<NodeJS.Signals | null>((r) => child.on('exit', (_c, s) => r(s)));
    await new Promise((r) => setTimeout(r, 300));
    const line = signalCommand(id, 15).split(' ')[1] as string;
    expect(task(line).status).toBe(0);
    expect(await ended).toBe('SIGTERM');
    // the background child ignored SIGTERM, but the group is killed once the command ends
    expect(spawnSync('pgrep', ['-f', `sh -c .*touch ${marker}`]).status).toBe(1);
    expect(task(line).stderr).toContain(`no command ${id} runs`);
  });

  it('the command line the SSH server runs holds no shell syntax', () => {
    expect(taskCommand(req(['sh', '-c', 'rm -rf / ; $(x) `y` "z"']))).toMatch(/^\/usr\/lib\/vse\/vse-task [A-Za-z0-9+/=]+$/);
  });
});

describe('the guest environment', () => {
  it('has a fixed base plus only the variables forwarded or set; host-only ones never go', () => {
    const env = guestEnvironment({ user: 'alice', uid: 1000, from: { APP_A: '1', APP_B: '2', OTHER: 'x', LD_PRELOAD: '/evil.so', ONE: 'o' }, forward: ['APP_*', 'ONE', 'LD_PRELOAD'], set: { SET: 'v' } });
    expect(env).toEqual(['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', 'HOME=/home/alice', 'USER=alice', 'LOGNAME=alice', 'SHELL=/bin/sh', 'APP_A=1', 'APP_B=2', 'ONE=o', 'SET=v']);
  });
});

describe('a task\'s environment in the guest', () => {
  it('is the task\'s own (Slurm\'s and the user\'s) but what describes the host; the guest\'s base stays; PATH keeps the base directories', () => {
    const from = {
      PATH: '/opt/app/bin:/usr/bin:/bin', HOME: '/home/alice', SHELL: '/bin/bash', USER: 'alice', PWD: '/scratch/run', OLDPWD: '/x', SHLVL: '2', _: '/usr/bin/srun',
      SLURM_PROCID: '3', SLURM_LOCALID: '1', SLURM_JOB_ID: '12', SLURMD_NODENAME: 'n1', OMP_NUM_THREADS: '2', LD_LIBRARY_PATH: '/host/lib', TMPDIR: '/tmp/job12',
      SLURM_SPANK_VSE_DESC: '{"v":1}', SLURM_SPANK_VSE_FILE: '/home/alice/app.xml', SLURM_SPANK__SLURM_SPANK_OPTION_vse_vse: 'app.xml', SLURM_SPANK_OTHER: 'kept',
    };
    const env = taskEnvironment({ user: 'alice', uid: 1000, from, cwd: '/home/alice', set: { VSE_VM_INDEX: '1' } });
    expect(env).toEqual([
      'PATH=/opt/app/bin:/usr/bin:/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/sbin', 'HOME=/home/alice', 'USER=alice', 'LOGNAME=alice', 'SHELL=/bin/sh',
      'SLURM_PROCID=3', 'SLURM_LOCALID=1', 'SLURM_JOB_ID=12', 'SLURMD_NODENAME=n1', 'OMP_NUM_THREADS=2', 'SLURM_SPANK_OTHER=kept',
      'PWD=/home/alice', 'VSE_VM_INDEX=1',
    ]);
  });
});

describe('the ready line', () => {
  it('carries the guest\'s SSH host key, only once the line is complete', () => {
    expect(parseReady('VSE-READY vm-0 ssh-ed25519 AAAAC3Nz\n', 'vm-0')).toEqual({ hostKey: 'ssh-ed25519 AAAAC3Nz' });
    expect(parseReady('VSE-READY vm-0 ssh-ed25519 AAAA', 'vm-0')).toBeUndefined();
    expect(parseReady('VSE-READY vm-1 ssh-ed25519 AAAA\n', 'vm-0')).toBeUndefined();
    expect(parseReady('VSE-READY vm-0\n', 'vm-0')).toEqual({});
    expect(parseReady('VSE-FAILED vm-0 no NIC with MAC 52:54:00:12:34:56\n', 'vm-0')).toEqual({ failed: 'no NIC with MAC 52:54:00:12:34:56' });
  });
});

describe('networks', () => {
  const base = {
    name: 'n', accel: 'tcg' as const, memoryMiB: 64, vcpus: 1, kernel: 'k', initrd: 'i', cmdline: 'c', overlay: 'o', qmpSocket: 'q',
    channelSocket: 'c', consoleLog: 'l', pidFile: 'p', sandbox: true,
  };
  it('the host\'s channel is an isolated user-mode network with only the guest\'s SSH port forwarded, to loopback', () => {
    const a = qemuArgs({ ...base, mgmt: { mac: MGMT_MAC, sshPort: 40022 } });
    expect(a).toContain('user,id=mgmt,restrict=on,hostfwd=tcp:127.0.0.1:40022-:22');
    expect(a).toContain(`virtio-net-pci,netdev=mgmt,mac=${MGMT_MAC},romfile=`);
  });
  it('the guest\'s SSH host key travels in the firmware config, never on a command line', () => {
    const a = qemuArgs({ ...base, hostKeyFile: '/s/vm0.hostkey' });
    expect(a).toContain('name=opt/org.vse/hostkey,file=/s/vm0.hostkey');
    expect(a.join(' ')).not.toMatch(/-append [^-]*hostkey/);
  });
  it('the job\'s network is a tap on its bridge, or a loopback multicast group without root', () => {
    expect(qemuArgs({ ...base, jobNet: { mac: jobNetMac(1), tap: 'vsetabc1' } })).toContain('tap,id=jobnet,ifname=vsetabc1,script=no,downscript=no');
    expect(qemuArgs({ ...base, jobNet: { mac: jobNetMac(1), mcast: '239.255.1.2:3000' } })).toContain('socket,id=jobnet,mcast=239.255.1.2:3000,localaddr=127.0.0.1');
    expect(() => qemuArgs({ ...base, jobNet: { mac: jobNetMac(1) } })).toThrow(/tap or a multicast/);
  });
  it('names, addresses and MACs are stable and fit Linux\'s limits', () => {
    const n = networkNames('/run/vse/jobs/12345.node-with-a-long-name', 300);
    expect(n.bridge).toMatch(/^vseb[0-9a-f]{8}$/);
    for (const t of n.taps) expect(t.length).toBeLessThanOrEqual(15);
    expect(networkNames('/run/vse/jobs/12345.node-with-a-long-name', 1)).toEqual({ ...n, taps: n.taps.slice(0, 1) });
    expect([jobAddress(0), jobAddress(254), jobAddress(255)]).toEqual(['10.77.0.1', '10.77.0.255', '10.77.1.0']);
    expect(jobNetMac(258)).toBe('52:54:01:00:01:02');
  });
  it('the guest learns its name, user, key, NICs and peers from its kernel command line', () => {
    const vms = [0, 1].map((i) => ({ index: i, name: `7-n-${i}`, mac: jobNetMac(i), address: jobAddress(i) })) as never[];
    const ctx = { jobId: '7', node: 'n', uid: 1001, gid: 1002, user: 'alice', scheduler: 'slurm' as const };
    expect(guestCmdline('console=ttyS0', { vm: vms[0] as never, ctx, keyBlob: 'AAAAkey', net: { mode: 'bridge', taps: [] }, all: vms }))
      .toBe('console=ttyS0 vse.hostname=7-n-0 vse.user=alice:1001:1002 vse.key=AAAAkey vse.mgmt=52:54:00:12:34:56 vse.net=52:54:01:00:00:00,10.77.0.1/16 vse.hosts=7-n-0=10.77.0.1,7-n-1=10.77.0.2');
  });
});

describe('vse exec arguments', () => {
  it('stop at -- or at the command; the command keeps its own options', () => {
    expect(parseExecArgs(['--job', '5', '--vm=1', '--env', 'A', '--', 'ls', '-l'])).toMatchObject({ job: '5', vm: 1, env: ['A'], argv: ['ls', '-l'] });
    expect(parseExecArgs(['--all', 'hostname', '--job', 'x'])).toMatchObject({ all: true, argv: ['hostname', '--job', 'x'] });
  });
  it('--task and --batch (the SPANK plugin\'s) take the command and nothing else', () => {
    expect(parseExecArgs(['--task', '--', '/usr/bin/hostname', '-s'])).toMatchObject({ mode: 'task', argv: ['/usr/bin/hostname', '-s'] });
    expect(parseExecArgs(['--batch', '--', '/spool/job12/slurm_script', 'a'])).toMatchObject({ mode: 'batch', argv: ['/spool/job12/slurm_script', 'a'] });
    expect(() => parseExecArgs(['--task', '--vm', '1', '--', 'x'])).toThrow('vse exec: --task takes no other option');
  });
  it('mistakes are named', () => {
    expect(() => parseExecArgs(['--vm', 'two', '--', 'x'])).toThrow('vse exec: --vm expects a whole number, got "two"');
    expect(() => parseExecArgs(['--job'])).toThrow('vse exec: --job needs a value');
    expect(() => parseExecArgs(['--job', '5'])).toThrow('vse exec: give the command to run');
    expect(() => parseExecArgs(['--all', '--vm', '1', '--', 'x'])).toThrow('give --vm or --all, not both');
    expect(() => parseExecArgs(['-x', '--', 'y'])).toThrow('vse exec: unknown option -x');
  });
});


describe('host directories over virtio-fs', () => {
  it('virtiofsd runs as the job\'s user through vse-userns, read-only shares as read-only bind mounts', async () => {
    const { USERNS, VIRTIOFSD, mountsParam, virtiofsdArgs } = await import('../../lib/deploy/shares.js');
    expect(virtiofsdArgs({ uid: 1001, gid: 1002, host: '/data/in', mode: 'ro', socket: '/s/fs/vm0-0.sock' })).toEqual([
      USERNS, '1001', '1002', '--ro', '/data/in', '--listen', '/s/fs/vm0-0.sock', '--', VIRTIOFSD, '--fd=3', '-o', 'source=/data/in', '-o', 'sandbox=namespace', '-o', 'cache=auto',
    ]);
    expect(virtiofsdArgs({ uid: 1001, gid: 1002, host: '/data/out', mode: 'rw', socket: '/s' })).not.toContain('--ro');
    expect(mountsParam([{ tag: 'vse0', guest: '/in', mode: 'ro' }, { tag: 'vse1', guest: '/out', mode: 'rw' }] as never)).toBe('vse.mounts=vse0:/in:ro,vse1:/out:rw');
    expect(mountsParam([])).toBeUndefined();
  });
  it('QEMU shares the guest\'s memory and adds one vhost-user-fs device per share', () => {
    const a = qemuArgs({
      name: 'n', accel: 'tcg', memoryMiB: 256, vcpus: 1, kernel: 'k', initrd: 'i', cmdline: 'c', overlay: 'o', qmpSocket: 'q', channelSocket: 'c', consoleLog: 'l', pidFile: 'p', sandbox: true,
      shares: [{ tag: 'vse0', socket: '/s/a.sock' }, { tag: 'vse1', socket: '/s/b.sock' }],
    });
    expect(a.join(' ')).toContain('-object memory-backend-memfd,id=mem,size=256M,share=on -numa node,memdev=mem');
    expect(a.join(' ')).toContain('-chardev socket,id=fs1,path=/s/b.sock -device vhost-user-fs-pci,chardev=fs1,tag=vse1');
  });
});

describe('the minimal guest\'s kernel modules', () => {
  it('lose their appended signature (an RSA check per module under TCG), and nothing else', async () => {
    const { stripModuleSignature } = await import('../../lib/configure/minimal.js');
    const body = Buffer.from('\x7fELF module body');
    const sig = Buffer.alloc(40, 7);
    const info = Buffer.alloc(12);
    info.writeUInt32BE(sig.length, 8);
    const signed = Buffer.concat([body, sig, info, Buffer.from('~Module signature appended~\n')]);
    expect(stripModuleSignature(signed)).toEqual(body);
    expect(stripModuleSignature(body)).toEqual(body);
  });
});
