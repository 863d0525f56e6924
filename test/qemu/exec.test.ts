/**
 * The channel into a job's guests, with real QEMU: `vse exec` as the job's (unprivileged) user runs
 * commands as that user in the guest, streams stdio, passes back exit codes and signals, passes
 * signals in, kills on timeout and when the caller dies; the VMs of a job share a private network;
 * other users are refused; cleanup leaves no process, file, bridge or tap behind.
 */
import { chmodSync, existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bin, endJob, hello, installedVse, jobUser, prologAs, qemuMentioning, runHook, slurmEnv, testSite, vseLinks } from './env.js';

const site = testSite();
chmodSync(dirname(site.file), 0o755); // the job's user reads the site config and its job's record
const job = '7101';
const node = 'e1';
let user: { user: string; uid: number; gid: number };

/** `vse exec` as the job's user (or as another uid). */
function vexec(args: string[], o: { uid?: number; gid?: number; input?: string; env?: Record<string, string> } = {}) {
  return execa(installedVse(), ['exec', '--job', job, ...args], {
    env: { VSE_SITE_CONFIG: site.file, PATH: '/usr/bin:/bin', ...o.env }, extendEnv: false, reject: false,
    uid: o.uid ?? user.uid, gid: o.gid ?? user.gid, ...(o.input !== undefined ? { input: o.input } : { stdin: 'ignore' }),
  });
}

/** Processes in guest VM 0 whose command line contains the marker (as root in the guest). */
async function guestProcesses(marker: string): Promise<string[]> {
  const r = await vexec(['--root', '--', 'ps', '-o', 'pid,args']);
  expect(r.exitCode, String(r.stderr)).toBe(0);
  return String(r.stdout).split('\n').filter((l) => l.includes(marker) && !l.includes('ps -o'));
}

async function waitFor(what: () => Promise<boolean>, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await what()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return what();
}

beforeAll(async () => {
  user = await jobUser();
  await prologAs(site.file, job, node, hello(2), user);
}, 180_000);

afterAll(async () => {
  await endJob(site.file, job, node);
});

describe('vse exec', () => {
  it('runs a command as the job\'s user in the guest, with its name as host name and the exit code passed back', async () => {
    const r = await vexec(['--', 'sh', '-c', 'echo "$(hostname) $(id -u):$(id -g) $USER $HOME $PWD"; echo to-stderr >&2; exit 3']);
    expect(r.exitCode).toBe(3);
    expect(String(r.stdout)).toBe(`${job}-${node}-0 ${user.uid}:${user.gid} ${user.user} /home/${user.user} /home/${user.user}`);
    expect(String(r.stderr)).toBe('to-stderr');
  });

  it('its QEMU runs as the job\'s user, not root', async () => {
    const pids = qemuMentioning(`/jobs/${job}.${node}/`);
    expect(pids).toHaveLength(2);
    for (const pid of pids) expect((await execa('ps', ['-o', 'uid=', '-p', String(pid)])).stdout.trim()).toBe(String(user.uid));
  });

  it('streams stdin to the command, and arguments arrive as given (no shell on the way)', async () => {
    const r = await vexec(['--', 'sh', '-c', 'cat; printf "[%s]" "$@"', 'sh', 'a b', '$HOME', "'q'", ';ls'], { input: 'line 1\nline 2\n' });
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout)).toBe("line 1\nline 2\n[a b][$HOME]['q'][;ls]");
  });

  it('forwards the variables asked for, and only those', async () => {
    const r = await vexec(['--env', 'APP_*', '--env', 'ONE', '--env', 'SET=given', '--', 'sh', '-c', 'echo "$APP_X $APP_Y $ONE $SET ${SECRET:-unset}"'],
      { env: { APP_X: 'x', APP_Y: 'y', ONE: '1', SECRET: 's' } });
    expect(String(r.stdout)).toBe('x y 1 given unset');
  });

  it('a command killed by a signal in the guest ends vse exec by the same signal', async () => {
    const r = await vexec(['--', 'sh', '-c', 'kill -USR1 $$']);
    expect(r.signal).toBe('SIGUSR1');
  });

  it('a missing command or working directory is reported as a shell would (127, the chdir message)', async () => {
    const r = await vexec(['--cwd', '/nonexistent', '--', 'no-such-command']);
    expect(r.exitCode).toBe(127);
    expect(String(r.stderr)).toContain("couldn't chdir to `/nonexistent': No such file or directory: going to /tmp instead");
    expect(String(r.stderr)).toContain('vse-task: no-such-command: No such file or directory');
  });

  it('--all runs in every VM with labelled output; the VMs resolve and reach each other on their private network', async () => {
    // busybox's ping needs a raw socket: as root in the guest
    const r = await vexec(['--all', '--root', '--', 'sh', '-c', `ping -c1 -W5 ${job}-${node}-0 >/dev/null && ping -c1 -W5 ${job}-${node}-1 >/dev/null && echo ok`]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout).split('\n').sort()).toEqual([`${job}-${node}-0: ok`, `${job}-${node}-1: ok`]);
  });

  it('SIGINT and SIGTERM reach the command in the guest; it and its children are gone afterwards', async () => {
    for (const [sig, n] of [['SIGINT', 1], ['SIGTERM', 2]] as const) {
      // a background child and the command itself (sleep 31n, which the shell becomes)
      const child = vexec(['--', 'sh', '-c', `sleep 32${n} & exec sleep 31${n}`]);
      expect(await waitFor(async () => (await guestProcesses(`sleep 32${n}`)).length > 0, 20_000)).toBe(true);
      child.kill(sig);
      const r = await child;
      expect(r.signal).toBe(sig);
      expect(await waitFor(async () => (await guestProcesses(`sleep 31${n}`)).length + (await guestProcesses(`sleep 32${n}`)).length === 0, 10_000)).toBe(true);
    }
  });

  it('--timeout ends the command with SIGTERM', async () => {
    const t0 = Date.now();
    const r = await vexec(['--timeout', '1', '--', 'sleep', '300']);
    expect(r.signal).toBe('SIGTERM');
    expect(String(r.stderr)).toContain('time limit of 1 s reached: SIGTERM');
    expect(Date.now() - t0).toBeLessThan(60_000);
  });

  it('when vse exec is killed with SIGKILL, the guest kills the command too', async () => {
    const marker = 'sleep 333';
    const child = vexec(['--', 'sleep', '333']);
    expect(await waitFor(async () => (await guestProcesses(marker)).length > 0, 20_000)).toBe(true);
    child.kill('SIGKILL');
    await child;
    expect(await waitFor(async () => (await guestProcesses(marker)).length === 0, 15_000)).toBe(true);
  });

  it('another user cannot run commands in the job\'s VMs; root can, also as root in the guest', async () => {
    const nobody = Number(String((await execa('id', ['-u', 'nobody'])).stdout).trim());
    const r = await vexec(['--', 'true'], { uid: nobody, gid: nobody });
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr)).toContain(`job ${job} is not yours`);
    expect(String(r.stderr)).toContain('only its user and root can run commands in its VMs');
    const asRoot = await execa(bin('vse'), ['exec', '--job', job, '--root', '--', 'id', '-u'], { env: { VSE_SITE_CONFIG: site.file }, reject: false });
    expect(asRoot.exitCode, String(asRoot.stderr)).toBe(0);
    expect(String(asRoot.stdout)).toBe('0');
  });

  it('bad requests are refused with the reason', async () => {
    expect(String((await vexec(['--vm', '5', '--', 'true'])).stderr)).toContain(`job ${job} has no VM 5 on ${node}; it has 2 (0..1)`);
    expect(String((await vexec(['--frobnicate', '--', 'true'])).stderr)).toContain('vse exec: unknown option --frobnicate');
    const none = await execa(installedVse(), ['exec', '--job', '999', '--', 'true'], { env: { VSE_SITE_CONFIG: site.file }, reject: false });
    expect(none.exitCode).toBe(2);
    expect(String(none.stderr)).toContain('job 999 has no VMs on this host');
  });
});

describe('the guests\' memory', () => {
  it('what a guest does not use goes back to the host: the balloon reports free pages, and QEMU\'s resident set falls', async () => {
    const r = await vexec(['--root', '--', 'sh', '-c', 'cat /sys/module/page_reporting/parameters/page_reporting_order; [ -d /sys/bus/virtio/drivers/virtio_balloon ] && echo bound']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stdout).split('\n')).toEqual(['5', 'bound']);
    // a guest that frees memory: the host gets it back within the kernel's 2 s reporting delay (and a margin)
    const [pid] = qemuMentioning(`/jobs/${job}.${node}/vm0.`);
    const rss = (): number => Number(/^Rss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1]) / 1024;
    const fill = await vexec(['--root', '--', 'sh', '-c', 'dd if=/dev/zero of=/tmp/fill bs=1M count=30 2>/dev/null && sync']);
    expect(fill.exitCode, String(fill.stderr)).toBe(0);
    const full = rss();
    expect((await vexec(['--root', '--', 'rm', '/tmp/fill'])).exitCode).toBe(0);
    expect(await waitFor(async () => rss() < full - 16, 20_000), `QEMU kept ${rss().toFixed(0)} MiB (${full.toFixed(0)} MiB with 30 MiB in use)`).toBe(true);
  });
});

describe('the guests\' randomness', () => {
  it('the kernel\'s random pool is fed by the host (virtio-rng) and ready at boot: the SSH server never waited for it', async () => {
    // dropbear seeds itself at its first connection, and says so when the kernel makes it wait
    const r = await vexec(['--root', '--', 'sh', '-c', 'cat /sys/class/misc/hw_random/rng_current; dmesg | grep -c "crng init done"; cat /var/log/dropbear.log']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const [rng, done, ...log] = String(r.stdout).split('\n');
    expect(rng).toBe('virtio_rng.0');
    expect(done).toBe('1');
    expect(log.join('\n')).toContain('Running in background');
    expect(log.join('\n')).not.toContain('Waiting for kernel randomness');
  });
});

describe('the minimal guest\'s kernel', () => {
  it('sets up no tracefs (its files took 9 MiB of each VM): the kernel skipped it by name, and tracefs has no trace events', async () => {
    // initcall_blacklist does nothing, silently, for a name the kernel does not have: the kernel's own words show it worked
    const r = await vexec(['--root', '--', 'sh', '-c', 'dmesg | grep " blacklisted$"; mkdir -p /run/t && mount -t tracefs tracefs /run/t && ls /run/t/events 2>/dev/null | wc -l; umount /run/t']);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const lines = String(r.stdout).trim().split('\n');
    expect(lines.slice(0, -1).map((l) => l.replace(/^\[[ .\d]+\] /, ''))).toEqual(['initcall tracer_init_tracefs blacklisted', 'initcall init_kprobe_trace blacklisted']);
    expect(lines.at(-1)).toBe('0');
  });
});

describe('cleanup of a job with a private network', () => {
  it('removes its VMs, files, bridge and taps, and nothing of other jobs', async () => {
    const other = '7102';
    const p = await runHook('prolog', site.file, slurmEnv(other, node, hello(1)));
    expect(p.exitCode, p.stderr).toBe(0);
    const before = await vseLinks();
    expect(before.length).toBeGreaterThanOrEqual(2 + 3); // two bridges, three taps
    const e = await runHook('epilog', site.file, slurmEnv(other, node));
    expect(e.exitCode, e.stderr).toBe(0);
    const after = await vseLinks();
    expect(before.length - after.length).toBe(2); // its bridge and its tap
    expect(existsSync(join(site.stateDir, 'jobs', `${other}.${node}`))).toBe(false);
    expect(qemuMentioning(`/jobs/${other}.${node}/`)).toEqual([]);
    // the first job still works
    expect((await vexec(['--', 'true'])).exitCode).toBe(0);
  });
});
