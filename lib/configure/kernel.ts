/** The guest kernel: a Debian kernel package, fetched with apt and unpacked into the cache. */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { HostError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { run } from '../util/run.js';

export interface KernelPackage {
  /** Versioned package name, e.g. linux-image-6.1.0-56-cloud-amd64. */
  name: string;
  deb: string;
  sha256: string;
}

const APT_ENV = { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' };

/** The versioned kernel package a metapackage (linux-image-cloud-amd64) points at. */
async function concretePackage(pkg: string, log: Logger): Promise<string> {
  if (/^linux-image-\d/.test(pkg)) return pkg;
  const r = await run(['apt-cache', 'depends', pkg], { env: APT_ENV, log, allowFailure: true });
  const m = /Depends: (linux-image-\d[^\s]*)/.exec(r.stdout);
  if (r.exitCode !== 0 || !m?.[1]) {
    throw new HostError(`cannot find the kernel package behind ${pkg}: ${r.stderr.trim() || 'apt-cache depends names none'}; hint: run apt-get update, or set kernelPackage in the site config`);
  }
  return m[1];
}

function findDeb(dirs: string[], name: string): string | undefined {
  for (const d of dirs) {
    if (!existsSync(d)) continue;
    const hit = readdirSync(d).filter((f) => f.startsWith(`${name}_`) && f.endsWith('.deb')).sort().at(-1);
    if (hit) return join(d, hit);
  }
  return undefined;
}

/** Changes whenever apt's package lists do (apt-get update), so a resolution can be reused until then. */
function aptStamp(): string {
  for (const f of ['/var/cache/apt/pkgcache.bin', '/var/lib/apt/lists']) {
    try {
      return `${f}:${statSync(f).mtimeMs}`;
    } catch {
      // try the next
    }
  }
  return 'none';
}

function writeAtomic(file: string, text: string): void {
  try {
    writeFileSync(`${file}.${process.pid}`, text);
    renameSync(`${file}.${process.pid}`, file);
  } catch {
    // only a memo
  }
}

/** apt-cache takes most of a second: remember the answer until apt's lists change. */
async function concretePackageMemo(pkg: string, debDir: string, log: Logger): Promise<string> {
  const memo = join(debDir, `${pkg}.resolved`);
  const stamp = aptStamp();
  try {
    const [seen, name] = readFileSync(memo, 'utf8').trim().split('\n');
    if (seen === stamp && name) return name;
  } catch {
    // not resolved yet
  }
  const name = await concretePackage(pkg, log);
  writeAtomic(memo, `${stamp}\n${name}\n`);
  return name;
}

/** sha256 of a .deb, remembered beside it by size and mtime. */
function debSha256(deb: string): string {
  const st = statSync(deb);
  const id = `${st.size} ${st.mtimeMs}`;
  const memo = `${deb}.sha256`;
  try {
    const [seen, sha] = readFileSync(memo, 'utf8').trim().split('\n');
    if (seen === id && sha) return sha;
  } catch {
    // not hashed yet
  }
  const sha = createHash('sha256').update(readFileSync(deb)).digest('hex');
  writeAtomic(memo, `${id}\n${sha}\n`);
  return sha;
}

/** Find the kernel package in the cache (or apt's), else download it with `apt-get download`. */
export async function fetchKernel(pkg: string, cacheDir: string, log: Logger): Promise<KernelPackage> {
  const debDir = join(cacheDir, 'debs');
  mkdirSync(debDir, { recursive: true, mode: 0o755 });
  let name: string;
  try {
    name = await concretePackageMemo(pkg, debDir, log);
  } catch (err) {
    // Offline with a filled cache still works: take the newest kernel already there.
    const cached = readdirSync(debDir).filter((f) => f.startsWith('linux-image-') && f.endsWith('.deb')).sort().at(-1);
    if (!cached) throw err;
    name = cached.split('_')[0] as string;
  }
  let deb = findDeb([debDir, '/var/cache/apt/archives'], name);
  if (!deb) {
    log.info(`downloading ${name} (guest kernel)`);
    await run(['apt-get', 'download', name], { cwd: debDir, env: APT_ENV, log, timeoutMs: 600_000 });
    deb = findDeb([debDir], name);
    if (!deb) throw new HostError(`apt-get download ${name} left no .deb in ${debDir}`);
  }
  return { name, deb, sha256: debSha256(deb) };
}
