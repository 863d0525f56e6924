/**
 * A Debian child (a description that extends a Debian one and adds files and offline build steps)
 * derives from its parent's configuration: its disk is a qcow2 overlay with the parent's disk as
 * backing file, the parent's kernel and initramfs are kept, and the files and steps are applied in
 * a build VM, without mmdebstrap. The booted child shows them from inside the guest; a failing
 * step publishes nothing. The parent is the Debian base debian-job.test.ts uses (same OS part), in
 * the shared cache: built once per host.
 */
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { GuestAgent } from '../../lib/guest/qga.js';
import { bin, qemuMentioning, runHook, slurmEnv, testSite } from './env.js';

const cache = '/var/cache/vse';
const site = testSite({ cacheDir: cache, bootTimeoutSec: 300 });
// the descriptions and the file to import: readable by the unprivileged user imports are read as
const dir = mkdtempSync('/tmp/vse-derive-test-');
chmodSync(dir, 0o755);
const write = (name: string, text: string): string => {
  writeFileSync(join(dir, name), text, { mode: 0o644 });
  return join(dir, name);
};
write('input.txt', 'from the host\n');
const parentXml = write('parent.xml', `<vse name="deb-parent">
  <os base="debian" release="bookworm" variant="apt">
    <packages><package name="htop"/></packages>
  </os>
  <vm memory="256M"/>
</vse>
`);
const child = (name: string, step: string): string => `<vse name="${name}" extends="./parent.xml">
  <files>
    <import from="input.txt" path="/opt/app/input.txt"/>
    <link target="/opt/app/input.txt" path="/opt/app/current"/>
    <edit path="/etc/motd"><replace pattern="^The programs" with="These programs"/><append line="built by vse"/></edit>
    <edit path="/etc/adduser.conf"><set key="DSHELL" value="/bin/dash"/></edit>
    <write path="/etc/app.conf" mode="0640">threads=4</write>
  </files>
  <build>
    <step name="install" workdir="/opt/app">${step}</step>
  </build>
</vse>
`;
// the step also lists its network interfaces, from a /proc of its own (its mounts end with it)
const childXml = write('child.xml', child('deb-child', 'echo "installed by $(id -u) in $(pwd)" | tee built.txt; cat current &gt;&gt; built.txt; ' +
  'mount -t proc proc /proc &amp;&amp; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " "'));
const failXml = write('fail.xml', child('deb-fail', 'echo "checking for cc... no"; exit 3'));

const env = { VSE_SITE_CONFIG: site.file };
const vse = (args: string[]) => execa(bin('vse'), args, { env, reject: false });
const configs = join(cache, 'configs');
const manifest = (key: string): Record<string, unknown> => JSON.parse(readFileSync(join(configs, key, 'manifest.json'), 'utf8')) as never;
const keyOf = (stdout: unknown): string => String(stdout).split(' ')[0] as string;

afterAll(async () => {
  // children of this run only (their keys hold this run's paths); the parent stays for the other tests
  for (const f of [childXml, failXml]) await vse(['destroy', f]);
  rmSync(dir, { recursive: true, force: true });
});

describe('a Debian child', () => {
  let parent = '';
  let key = '';

  it('derives from its parent configuration: an overlay of its disk, its kernel, no mmdebstrap', async () => {
    const p = await vse(['create', parentXml]);
    expect(p.exitCode, String(p.stderr)).toBe(0);
    parent = keyOf(p.stdout);
    const c = await vse(['create', '--verbose', childXml]);
    expect(c.exitCode, String(c.stderr)).toBe(0);
    key = keyOf(c.stdout);
    expect(String(c.stderr)).toContain(`building ${key} on ${parent}: 5 file operation(s), 1 offline step(s) in a build VM`);
    expect(String(c.stderr)).not.toContain('mmdebstrap');
    const m = manifest(key);
    expect(m).toMatchObject({ parent, base: 'debian', description: 'deb-child', derivation: 'build-vm', build: [{ name: 'install', mode: 'offline' }], builder: 'nobody' });
    expect((m.files as { op: string }[]).map((f) => f.op)).toEqual(['import', 'link', 'edit', 'edit', 'write']);
    const log = readFileSync(join(configs, key, 'build.log'), 'utf8');
    expect(log).toContain(`vse: derived from ${parent}`);
    expect(log).toMatch(/^--- step install \(offline, exit 0, \d+ ms\)\ninstalled by 0 in \/opt\/app\nlo$/m); // no network but loopback
    expect(log).not.toMatch(/^I: /m); // mmdebstrap's lines
    const info = JSON.parse((await execa('qemu-img', ['info', '-U', '--output=json', join(configs, key, 'disk.qcow2')])).stdout) as Record<string, unknown>;
    expect(info['backing-filename']).toBe(join(configs, parent, 'disk.qcow2'));
    expect(info['backing-filename-format']).toBe('qcow2');
    for (const f of ['vmlinuz', 'initrd.img']) expect(readFileSync(join(configs, key, f)).equals(readFileSync(join(configs, parent, f)))).toBe(true);
    const [pm, cm] = [manifest(parent).buildMs as number, m.buildMs as number];
    console.log(`Debian child derived in ${(cm / 1000).toFixed(1)} s; its parent took ${(pm / 1000).toFixed(1)} s with mmdebstrap`);
    expect(cm).toBeLessThan(pm);
  });

  it('boots with the files and the step\'s result, seen from inside the guest', async () => {
    const bundle = String((await vse(['validate', '--emit', childXml])).stdout);
    const job = { ...slurmEnv('9101', 'e1'), SPANK_VSE_DESC: bundle, SPANK_VSE_FILE: childXml };
    const p = await runHook('prolog', site.file, job);
    expect(p.exitCode, p.stderr).toBe(0);
    const jobDir = join(site.stateDir, 'jobs', '9101.e1');
    expect((JSON.parse(readFileSync(join(jobDir, 'state.json'), 'utf8')) as { configuration: { key: string } }).configuration.key).toBe(key);
    const agent = await GuestAgent.open(join(jobDir, 'vm0.qga'), 120_000);
    try {
      const sh = async (cmd: string): Promise<string> => (await agent.exec(['/bin/sh', '-c', cmd])).stdout;
      expect(await sh('cat /opt/app/input.txt; readlink /opt/app/current; stat -c "%U %a" /opt/app/input.txt')).toBe('from the host\n/opt/app/input.txt\nroot 644\n');
      expect(await sh('cat /opt/app/built.txt')).toBe('installed by 0 in /opt/app\nfrom the host\n');
      expect(await sh('head -n 2 /etc/motd | tail -n 1; tail -n 1 /etc/motd')).toBe('These programs included with the Debian GNU/Linux system are free software;\nbuilt by vse\n');
      expect(await sh('grep "^DSHELL=" /etc/adduser.conf; cat /etc/app.conf; stat -c %a /etc/app.conf')).toBe('DSHELL=/bin/dash\nthreads=4\n640\n');
      expect((await sh('findmnt -n -o SOURCE,FSTYPE /')).trim()).toBe('/dev/vda ext4');
    } finally {
      agent.close();
    }
    const e = await runHook('epilog', site.file, job);
    expect(e.exitCode, e.stderr).toBe(0);
    expect(qemuMentioning('/jobs/9101.e1/')).toEqual([]);
  });

  it('a failing offline step names the step, quotes its output, publishes nothing, and the next create starts clean', async () => {
    const r = await vse(['create', '--verbose', failXml]);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr)).toContain('build step "install" failed (exit 3):\nchecking for cc... no');
    const failed = /building (\w+) on /.exec(String(r.stderr))?.[1] as string;
    expect(failed).toMatch(/^[0-9a-f]{24}$/);
    expect(existsSync(join(configs, failed))).toBe(false);
    expect(readdirSync(configs).filter((f) => f.includes(failed))).toEqual([]); // no lock, no .build- directory
    expect(qemuMentioning(`.build-${failed}`)).toEqual([]);
    writeFileSync(failXml, child('deb-fail', 'echo "checking for cc... yes"'));
    const again = await vse(['create', failXml]);
    expect(again.exitCode, String(again.stderr)).toBe(0);
    expect(manifest(keyOf(again.stdout)).parent).toBe(parent);
  });
});
