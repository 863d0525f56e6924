/**
 * A job on the Debian base, end to end: the prolog builds (or reuses) the configuration with the
 * packages the description asks for and an online build step (run in a booted guest, its disk
 * kept), boots it, and the guest agent confirms from inside the guest that the packages are
 * installed, the step's result is there, the VM has its name and its kernel options; the epilog
 * removes it. `vse exec` reaches the guest over its SSH channel.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { GuestAgent } from '../../lib/guest/qga.js';
import { bin, qemuMentioning, runHook, slurmEnv, testSite } from './env.js';

// the shared cache: the Debian base is built once per host (about a minute), then reused
const site = testSite({ cacheDir: '/var/cache/vse', bootTimeoutSec: 300 });
// a host file to import: readable by the unprivileged user imports are read as
const data = mkdtempSync('/tmp/vse-debian-data-');
chmodSync(data, 0o755);
writeFileSync(join(data, 'input.txt'), 'from the host\n', { mode: 0o644 });
afterAll(() => rmSync(data, { recursive: true, force: true }));
const xml = `<vse name="deb">
  <os base="debian" release="bookworm" variant="apt">
    <packages><package name="htop"/></packages>
  </os>
  <files>
    <import from="${data}/input.txt" path="/opt/input.txt"/>
    <copy from="/etc/os-release" path="/opt/os-release"/>
    <link target="/opt/input.txt" path="/opt/link"/>
    <delete path="/etc/issue.net"/>
    <edit path="/etc/motd"><append line="vse was here"/></edit>
    <write path="/etc/vse-note">written by vse</write>
  </files>
  <build>
    <step name="offline">echo "offline as $(id -u)" > /opt/offline.txt</step>
    <step name="inside" mode="online" workdir="/opt">echo "built online by $(id -u) on $(hostname)" > /opt/online.txt</step>
  </build>
  <vm memory="256M"/>
  <boot><option name="vse.mark" value="1"/></boot>
</vse>
`;
const bundle = { v: 1, file: '/home/u/deb.xml', layers: [{ path: '/home/u/deb.xml', text: xml }] };

describe('a job on the Debian base', () => {
  it('boots a VM with the packages and kernel options it asked for, seen from inside the guest', async () => {
    const env = { ...slurmEnv('9001', 'd1'), SPANK_VSE_DESC: JSON.stringify(bundle), SPANK_VSE_FILE: '/home/u/deb.xml' };
    const p = await runHook('prolog', site.file, env);
    expect(p.exitCode, p.stderr).toBe(0);
    const dir = join(site.stateDir, 'jobs', '9001.d1');
    const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as { configuration: { key: string }; vms: { name: string }[] };
    expect(state.vms.map((v) => v.name)).toEqual(['9001-d1-0']);
    let agent: GuestAgent | undefined = await GuestAgent.open(join(dir, 'vm0.qga'), 120_000);
    try {
      const pkg = await agent.exec(['/usr/bin/dpkg-query', '-W', '-f', '${Status}', 'htop']);
      expect(pkg.stdout).toBe('install ok installed');
      expect((await agent.exec(['/bin/hostname'])).stdout.trim()).toBe('9001-d1-0');
      expect((await agent.exec(['/bin/cat', '/proc/cmdline'])).stdout).toMatch(/ vse\.mark=1 .*vse\.hostname=9001-d1-0/);
      // every file mechanism and the offline step, from inside the guest; all of it belongs to root
      const sh = async (cmd: string): Promise<string> => (await agent!.exec(['/bin/sh', '-c', cmd])).stdout;
      expect(await sh('cat /opt/input.txt; readlink /opt/link; stat -c %U /opt/input.txt')).toBe('from the host\n/opt/input.txt\nroot\n');
      expect(await sh('cmp -s /etc/os-release /opt/os-release && echo same; test -e /etc/issue.net || echo deleted')).toBe('same\ndeleted\n');
      expect(await sh('tail -n 1 /etc/motd; cat /etc/vse-note; cat /opt/offline.txt')).toBe('vse was here\nwritten by vse\noffline as 0\n');
      // the online build step ran inside a booted guest, and its result was kept on the disk
      expect((await agent.exec(['/bin/cat', '/opt/online.txt'])).stdout).toBe('built online by 0 on vse-build\n');
      const root = await agent.exec(['/bin/findmnt', '-n', '-o', 'SOURCE,FSTYPE', '/']);
      expect(root.stdout.trim()).toBe('/dev/vda ext4');
    } finally {
      agent.close();
      agent = undefined;
    }
    // the job's channel (SSH to the guest's dropbear, vse-task) works in the Debian guest as in the minimal one
    const x = await execa(bin('vse'), ['exec', '--job', '9001', '--', 'sh', '-c', 'hostname; id -u; cat /opt/input.txt; exit 4'], { env: { VSE_SITE_CONFIG: site.file }, reject: false });
    expect(x.exitCode, String(x.stderr)).toBe(4);
    expect(String(x.stdout)).toBe('9001-d1-0\n0\nfrom the host');
    const e = await runHook('epilog', site.file, env);
    expect(e.exitCode, e.stderr).toBe(0);
    expect(qemuMentioning('/jobs/9001.d1/')).toEqual([]);
  });

  /** `vse create` of the description with its online step replaced: the result, and the cache before and after. */
  async function createWithStep(name: string, step: string): Promise<{ exitCode: number | undefined; stderr: string; before: string[]; after: string[] }> {
    const file = join(site.stateDir, '..', `${name}.xml`);
    writeFileSync(file, xml.replace(/<step name="inside"[^>]*>[^<]*<\/step>/, `<step name="${name}" mode="online">${step}</step>`));
    const env = { VSE_SITE_CONFIG: site.file };
    const keys = async (): Promise<string[]> => (JSON.parse(String((await execa(bin('vse'), ['images', '--json'], { env })).stdout)) as { key: string }[]).map((c) => c.key);
    const before = await keys();
    const r = await execa(bin('vse'), ['create', file], { env, reject: false });
    return { exitCode: r.exitCode, stderr: String(r.stderr), before, after: await keys() };
  }

  it('an online step that fails names the step, quotes its output, powers nothing left on, publishes nothing', async () => {
    const r = await createWithStep('make', 'echo "no compiler here" >&2; exit 5');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('build step "make" failed in the guest (exit 5):\nno compiler here');
    expect(r.after).toEqual(r.before);
    expect(qemuMentioning('.build-')).toEqual([]);
  });

  it('a build that fills the disk fails with the guest\'s own message, and keeps nothing', async () => {
    const r = await createWithStep('fill', 'fallocate -l 64G /fill');
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/build step "fill" failed in the guest \(exit 1\):\n.*No space left on device/);
    expect(r.after).toEqual(r.before);
    expect(qemuMentioning('.build-')).toEqual([]);
  });
});
