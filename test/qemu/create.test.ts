/**
 * Configuration tools with real parts: every mechanism the minimal base supports is applied, the
 * result boots, and the guest itself reports what it finds; keys, caching, locks, faults, images,
 * destroy and gc.
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { bin, qemuMentioning, runHook, slurmEnv } from './env.js';

// a private cache (the kernel package is shared with the host's cache when it has it)
const dir = mkdtempSync('/tmp/vse-create-test-');
chmodSync(dir, 0o755);
const cacheDir = join(dir, 'cache');
mkdirSync(cacheDir);
if (existsSync('/var/cache/vse/debs')) symlinkSync('/var/cache/vse/debs', join(cacheDir, 'debs'));
const siteFile = join(dir, 'site.json');
writeFileSync(siteFile, JSON.stringify({ stateDir: join(dir, 'state'), logDir: join(dir, 'log'), cacheDir }));
afterAll(async () => {
  for (const d of existsSync(join(dir, 'state/jobs')) ? readdirSync(join(dir, 'state/jobs')) : []) {
    const [job, ...node] = d.split('.');
    await execa(bin('vse'), ['cleanup', '--job', job as string, '--node', node.join('.')], { env: { VSE_SITE_CONFIG: siteFile }, reject: false });
  }
  rmSync(dir, { recursive: true, force: true });
});

const vse = (args: string[]) => execa(bin('vse'), args, { env: { VSE_SITE_CONFIG: siteFile }, reject: false });
const write = (name: string, text: string, mode = 0o644): string => {
  const p = join(dir, name);
  writeFileSync(p, text, { mode });
  chmodSync(p, mode);
  return p;
};
const images = async (): Promise<{ key: string; parent?: string; description?: string }[]> => JSON.parse(String((await vse(['images', '--json'])).stdout)) as never;

write('data.txt', 'payload from the host\n');
const app = write('app.xml', `<vse name="app" extends="minimal">
  <files>
    <import from="data.txt" path="/opt/data.txt"/>
    <copy from="/opt/data.txt" path="/opt/copy.txt"/>
    <link target="/opt/data.txt" path="/opt/link"/>
    <delete path="/lib/modules/virtiofs.ko"/>
    <write path="/etc/motd">hello</write>
    <edit path="/etc/vse-release"><append line="world"/><set key="color" value="blue"/></edit>
    <write path="/etc/vse/boot.d/check.sh"><![CDATA[
echo "data: $(cat /opt/data.txt)"
echo "copy: $(cat /opt/copy.txt)"
echo "motd: $(cat /etc/motd)"
echo "built: $(cat /opt/built.txt)"
echo "link: $(readlink /opt/link)"
[ -e /lib/modules/virtiofs.ko ] && echo "deleted: no" || echo "deleted: yes"
echo "release: $(grep -c -e '^world$' -e '^color=blue$' /etc/vse-release)"
echo "cmdline: $(cat /proc/cmdline)"
]]></write>
  </files>
  <build><step name="compile">echo "by uid $(id -u) in the sandbox" > /opt/built.txt</step></build>
  <boot><option name="vse.test" value="42"/></boot>
</vse>
`);

describe('vse create on the minimal base', () => {
  it('applies every file mechanism, an offline build step and boot options; the booted guest sees them', async () => {
    const c = await vse(['create', app]);
    expect(c.exitCode, String(c.stderr)).toBe(0);
    const bundle = String((await vse(['validate', '--emit', app])).stdout);
    const env = { ...slurmEnv('8001', 'c1'), SPANK_VSE_DESC: bundle, SPANK_VSE_FILE: app };
    const p = await runHook('prolog', siteFile, env);
    expect(p.exitCode, p.stderr).toBe(0);
    const console = readFileSync(join(dir, 'state/jobs/8001.c1/vm0.console.log'), 'utf8');
    expect(console).toContain('data: payload from the host');
    expect(console).toContain('copy: payload from the host');
    expect(console).toContain('motd: hello');
    expect(console).toContain('built: by uid 0 in the sandbox'); // root of its own user namespace only
    expect(console).toContain('link: /opt/data.txt');
    expect(console).toContain('deleted: yes');
    expect(console).toContain('release: 2');
    expect(console).toMatch(/cmdline: .* vse\.test=42 vse\.hostname=8001-c1-0/);
    expect((await runHook('epilog', siteFile, env)).exitCode).toBe(0);
    expect(qemuMentioning('/jobs/8001.c1/')).toEqual([]);
    // the build ran as an unprivileged user and its output is kept
    const key = String(c.stdout).split(' ')[0] as string;
    const manifest = JSON.parse(readFileSync(join(cacheDir, 'configs', key, 'manifest.json'), 'utf8')) as { builder: string; parent: string };
    expect(manifest.builder).toBe('nobody');
    expect(readFileSync(join(cacheDir, 'configs', key, 'build.log'), 'utf8')).toMatch(/--- step compile \(offline, exit 0/);
  });

  it('gives the same key for the same inputs, from the cache, and a new key when an input changes', async () => {
    const a = String((await vse(['create', app])).stdout);
    const b = String((await vse(['create', app])).stdout);
    expect(b).toBe(a);
    write('data.txt', 'changed payload\n');
    const c = String((await vse(['create', app])).stdout);
    write('data.txt', 'payload from the host\n');
    expect(c.split(' ')[0]).not.toBe(a.split(' ')[0]);
  });

  it('reads host files with the user\'s rights: a file only root can read is refused, nothing is published', async () => {
    write('secret.txt', 'root only\n', 0o600);
    const bad = write('secret.xml', '<vse name="s" extends="minimal"><files><import from="secret.txt" path="/s"/></files></vse>');
    const before = (await images()).length;
    const r = await vse(['create', bad]);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr)).toMatch(/is not readable by you|<import> \/s: cannot read .*secret\.txt as nobody/);
    expect((await images()).length).toBe(before);
  });

  it('a failing build step names the step and quotes its output, leaves nothing half-published, and the next create starts clean', async () => {
    const failing = write('fail.xml', '<vse name="f" extends="minimal"><build><step name="configure">echo "checking for cc... no"; exit 3</step></build></vse>');
    const before = (await images()).length;
    const r = await vse(['create', failing]);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr)).toContain('build step "configure" failed (exit 3):\nchecking for cc... no');
    expect((await images()).length).toBe(before);
    expect(readdirSync(join(cacheDir, 'configs')).filter((f) => f.startsWith('.'))).toEqual([]);
    write('fail.xml', '<vse name="f" extends="minimal"><build><step name="configure">echo ok</step></build></vse>');
    expect((await vse(['create', failing])).exitCode).toBe(0);
  });

  it('builds once when two creates race, and breaks the lock of a builder that died', async () => {
    const race = write('race.xml', '<vse name="r" extends="minimal"><build><step name="slow">sleep 1; echo done > /r</step></build></vse>');
    const [a, b] = await Promise.all([vse(['create', race]), vse(['create', race])]);
    expect(a.exitCode, String(a.stderr)).toBe(0);
    expect(b.exitCode, String(b.stderr)).toBe(0);
    expect(String(a.stdout)).toBe(String(b.stdout));
    const key = String(a.stdout).split(' ')[0] as string;
    rmSync(join(cacheDir, 'configs', key), { recursive: true });
    // a lock left by a builder that is gone (pid 999999 on this host)
    const { hostname } = await import('node:os');
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    writeFileSync(join(cacheDir, 'configs', `.lock-${key}`), JSON.stringify({ host: hostname(), pid: 999999, boot, since: new Date().toISOString() }));
    const c = await vse(['create', '--verbose', race]);
    expect(c.exitCode, String(c.stderr)).toBe(0);
    expect(String(c.stdout)).toBe(String(a.stdout));
  });

  it('lists, destroys and garbage-collects configurations, never a base others build on', async () => {
    const key = String((await vse(['create', app])).stdout).split(' ')[0];
    const derived = (await images()).find((c) => c.key === key);
    expect(derived?.parent).toBeDefined();
    const refused = await vse(['destroy', derived?.parent as string]);
    expect(refused.exitCode).not.toBe(0);
    expect(String(refused.stderr)).toContain(`is the base of`);
    expect((await vse(['destroy', app])).exitCode).toBe(0);
    expect((await images()).some((c) => c.key === derived?.key)).toBe(false);
    const gc = await vse(['gc', '--older-than', '0', '--json']);
    expect(gc.exitCode, String(gc.stderr)).toBe(0);
    expect((JSON.parse(String(gc.stdout)) as { removed: string[] }).removed.length).toBeGreaterThan(0);
    expect(await images()).toEqual([]);
  });
});

describe('a builder killed half-way', () => {
  it('leaves no half-published configuration, and the next create builds it from scratch', async () => {
    const slow = write('killed.xml', '<vse name="k" extends="minimal"><build><step name="long">sleep 30</step></build></vse>');
    const child = execa(bin('vse'), ['create', slow], { env: { VSE_SITE_CONFIG: siteFile }, reject: false });
    // wait until the build is under way (its lock exists), then kill it the hard way
    const configs = join(cacheDir, 'configs');
    const deadline = Date.now() + 60_000;
    while (!(existsSync(configs) && readdirSync(configs).some((f) => f.startsWith('.lock-'))) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    child.kill('SIGKILL');
    expect((await child).signal).toBe('SIGKILL');
    const before = await images();
    expect(before.some((c) => c.description === 'k')).toBe(false);
    write('killed.xml', '<vse name="k" extends="minimal"><build><step name="long">echo quick</step></build></vse>');
    const again = await vse(['create', slow]);
    expect(again.exitCode, String(again.stderr)).toBe(0);
    expect((await images()).some((c) => c.description === 'k')).toBe(true);
    // what the killed build left (its lock, its temporary directory) is gone or collected
    await vse(['gc', '--older-than', '3650']);
    expect(readdirSync(configs).filter((f) => f.startsWith('.lock-'))).toEqual([]);
  });
});
