/**
 * bench/create: `vse create` as whole CLI runs (build/bin/vse: the launcher, the bundled CLI and
 * its code caches, as `make install` installs them). A cache hit (the configuration exists) against
 * bare node start-up, interleaved; and cold builds of the minimal guest (base, then a derived
 * configuration with an import and a build step) into an empty cache. Goals: hit under 100 ms,
 * minimal build under 5 s.
 * With --debian: a cold build of a Debian base through vse against a bare mmdebstrap of the same
 * package set, same run (goal: ratio under 1.15), then a cold child of that base (files and an
 * offline step, derived in a build VM). About two minutes.
 * Usage: node dist/bench/create.js [--runs N] [--json] [--debian]
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { median } from './stats.js';

const args = process.argv.slice(2);
const runs = Math.max(1, Number(args[args.indexOf('--runs') + 1] ?? 0) || 11);
const json = args.includes('--json');
const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const vse = join(repo, 'build', 'bin', 'vse');
const node = (readFileSync(vse, 'utf8').split('\n')[0] ?? '').slice(2).trim() || process.execPath;


function timed(cmd: string, argv: string[], env: NodeJS.ProcessEnv): number {
  const t0 = performance.now();
  const r = spawnSync(cmd, argv, { env, stdio: ['ignore', 'ignore', 'pipe'] });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed: ${String(r.stderr)}`);
  return ms;
}

const dir = mkdtempSync('/tmp/vse-bench-create-');
chmodSync(dir, 0o755); // the import is read as an unprivileged user
try {
  const cache = join(dir, 'cache');
  mkdirSync(cache);
  // the kernel package is fetched once per host; the builds measured here start from it
  if (existsSync('/var/cache/vse/debs')) symlinkSync('/var/cache/vse/debs', join(cache, 'debs'));
  const site = join(dir, 'site.json');
  writeFileSync(site, JSON.stringify({ cacheDir: cache, stateDir: join(dir, 'state'), logDir: join(dir, 'log') }));
  writeFileSync(join(dir, 'data.txt'), 'x\n');
  const derived = join(dir, 'app.xml');
  writeFileSync(derived, '<vse name="app" extends="minimal"><files><import from="data.txt" path="/opt/data.txt"/></files><build><step name="s">echo built > /opt/built</step></build></vse>');
  const hello = join(repo, 'examples', 'hello.xml');
  const env = { ...process.env, VSE_SITE_CONFIG: site };

  const coldBase: number[] = [];
  const coldDerived: number[] = [];
  for (let i = 0; i < 3; i++) {
    rmSync(join(cache, 'configs'), { recursive: true, force: true });
    coldBase.push(timed(vse, ['create', hello], env));
    coldDerived.push(timed(vse, ['create', derived], env));
  }
  const bare: number[] = [];
  const hit: number[] = [];
  const hitDerived: number[] = [];
  for (let i = 0; i < runs; i++) {
    bare.push(timed(node, ['-e', '0'], env));
    hit.push(timed(vse, ['create', hello], env));
    hitDerived.push(timed(vse, ['create', derived], env));
  }
  let debian: { vseMs: number; mmdebstrapMs: number; ratio: number; childMs: number } | undefined;
  if (args.includes('--debian')) {
    const { debianIncludes } = await import('../lib/configure/debian-spec.js');
    const { debianSources } = await import('../lib/configure/debian-sources.js');
    const spec = { release: 'bookworm', variant: 'apt', kernelPackage: 'linux-image-cloud-amd64', packages: [{ name: 'htop', state: 'present' as const }], services: [], diskMiB: 1024 };
    const deb = join(dir, 'deb.xml');
    writeFileSync(deb, '<vse name="deb"><os base="debian" release="bookworm" variant="apt"><packages><package name="htop"/></packages></os></vse>');
    const bare = timed('/usr/bin/mmdebstrap', ['--mode=unshare', '--quiet', `--variant=${spec.variant}`, `--include=${debianIncludes(spec).join(',')}`, spec.release, join(dir, 'bare.tar'), ...debianSources(spec)], env);
    rmSync(join(dir, 'bare.tar'), { force: true });
    const ours = timed(vse, ['create', deb], env);
    // a child of that base with an import, an edit, a link and an offline step: derived from it, no mmdebstrap
    const child = join(dir, 'deb-child.xml');
    writeFileSync(child, '<vse name="deb-child" extends="./deb.xml"><files><import from="data.txt" path="/opt/data.txt"/><link target="/opt/data.txt" path="/opt/link"/>' +
      '<edit path="/etc/motd"><append line="built by vse"/></edit></files><build><step name="s">cat /opt/data.txt &gt; /opt/built</step></build></vse>');
    const derived = timed(vse, ['create', child], env);
    debian = { vseMs: Math.round(ours), mmdebstrapMs: Math.round(bare), ratio: Number((ours / bare).toFixed(3)), childMs: Math.round(derived) };
  }
  const r = {
    runs,
    debian,
    nodeMs: Math.round(median(bare)),
    hitMs: Math.round(median(hit)),
    hitDerivedMs: Math.round(median(hitDerived)),
    hitRatio: Number((median(hit) / median(bare)).toFixed(2)),
    coldMinimalMs: Math.round(median(coldBase)),
    coldDerivedMs: Math.round(median(coldDerived)),
  };
  if (json) console.log(JSON.stringify(r));
  else {
    console.log(`vse create, medians (${runs} runs for hits, 3 for cold builds):`);
    console.log(`  node -e 0                          ${r.nodeMs} ms`);
    console.log(`  cache hit, minimal base            ${r.hitMs} ms  (${r.hitRatio}x node; goal < 100 ms)`);
    console.log(`  cache hit, derived (import+step)   ${r.hitDerivedMs} ms`);
    console.log(`  cold build, minimal base           ${r.coldMinimalMs} ms  (goal < 5000 ms)`);
    console.log(`  cold build, derived on the base    ${r.coldDerivedMs} ms`);
    if (debian) {
      console.log(`  cold Debian base: vse ${debian.vseMs} ms, bare mmdebstrap of the same set ${debian.mmdebstrapMs} ms, ratio ${debian.ratio} (goal < 1.15)`);
      console.log(`  cold Debian child of it (import, edit, link, offline step), derived: ${debian.childMs} ms`);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
