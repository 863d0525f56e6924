/**
 * The configuration cache: one directory per content key, published atomically (built in a
 * temporary directory, renamed into place). One build per key at a time, across processes and
 * nodes sharing the cache: a lock file names its holder and is kept fresh while it builds; a lock
 * whose holder died (same host, pid gone or rebooted) or went silent is broken.
 */
import { closeSync, existsSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, utimesSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { HostError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { bootId } from '../deploy/proc.js';

export const HEARTBEAT_MS = 5000;
/** A lock not refreshed for this long is stale, whoever holds it (another node, a frozen builder). */
export const STALE_MS = 60_000;

export function configsDir(cacheDir: string): string {
  return join(cacheDir, 'configs');
}

export function configDir(cacheDir: string, key: string): string {
  return join(configsDir(cacheDir), key);
}

export function isPublished(dir: string): boolean {
  return existsSync(join(dir, 'manifest.json'));
}


interface LockInfo {
  host: string;
  pid: number;
  boot: string;
  since: string;
}

/** Why a lock is stale, or undefined while its holder may still be building. */
function staleness(file: string): string | undefined {
  let info: LockInfo;
  let age: number;
  try {
    info = JSON.parse(readFileSync(file, 'utf8')) as LockInfo;
    age = Date.now() - statSync(file).mtimeMs;
  } catch {
    return existsSync(file) ? 'unreadable lock' : undefined;
  }
  if (info.host === hostname()) {
    if (info.boot !== bootId()) return `held by pid ${info.pid} before a reboot`;
    try {
      process.kill(info.pid, 0);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ESRCH') return `its builder (pid ${info.pid}) is gone`;
    }
  }
  return age > STALE_MS ? `not refreshed for ${Math.round(age / 1000)} s (holder ${info.host}:${info.pid})` : undefined;
}

function tryLock(file: string): boolean {
  try {
    const fd = openSync(file, 'wx', 0o644);
    writeSync(fd, JSON.stringify({ host: hostname(), pid: process.pid, boot: bootId(), since: new Date().toISOString() } satisfies LockInfo));
    closeSync(fd);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * Run `build` for `key` unless the configuration is already published; concurrent callers wait for
 * the one build and reuse it. `build` must publish with `publish()` before it returns.
 */
export async function buildOnce<T>(cacheDir: string, key: string, log: Logger, build: () => Promise<T>, load: () => T, timeoutMs = 30 * 60_000): Promise<T> {
  const dir = configDir(cacheDir, key);
  const lock = join(configsDir(cacheDir), `.lock-${key}`);
  const deadline = Date.now() + timeoutMs;
  let said = false;
  for (;;) {
    if (isPublished(dir)) return load();
    if (tryLock(lock)) break;
    const stale = staleness(lock);
    if (stale) {
      log.warn(`breaking the build lock of ${key}: ${stale}`);
      // rename first: of two breakers only one moves it, and a fresh lock is never removed by mistake
      const aside = `${lock}.stale-${process.pid}`;
      try {
        renameSync(lock, aside);
        rmSync(aside, { force: true });
      } catch {
        // someone else broke it
      }
      continue;
    }
    if (!said) {
      log.info(`waiting for another build of ${key}`);
      said = true;
    }
    if (Date.now() > deadline) throw new HostError(`gave up waiting for the build of ${key} (lock ${lock})`);
    await sleep(250);
  }
  const beat = setInterval(() => {
    try {
      const now = new Date();
      utimesSync(lock, now, now);
    } catch {
      // lock gone: the build goes on; the next publish decides
    }
  }, HEARTBEAT_MS);
  try {
    if (isPublished(dir)) return load(); // published while we took the lock
    return await build();
  } finally {
    clearInterval(beat);
    rmSync(lock, { force: true });
  }
}

/** Move a finished build into place (atomic: a reader sees all of it or nothing). */
export function publish(built: string, dir: string): void {
  try {
    renameSync(built, dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if ((code === 'EEXIST' || code === 'ENOTEMPTY') && isPublished(dir)) {
      rmSync(built, { recursive: true, force: true });
      return;
    }
    if ((code === 'EEXIST' || code === 'ENOTEMPTY') && !isPublished(dir)) {
      // a directory without a manifest is a leftover, never a configuration
      rmSync(dir, { recursive: true, force: true });
      renameSync(built, dir);
      return;
    }
    throw err;
  }
}

export interface StoredConfiguration {
  key: string;
  dir: string;
  base: string;
  parent?: string;
  description?: string;
  builtAt: string;
  buildMs: number;
  bytes: number;
  lastUsed: string;
}

function sizeOf(path: string): number {
  const st = statSync(path);
  if (!st.isDirectory()) return st.size;
  return readdirSync(path).reduce((n, f) => n + sizeOf(join(path, f)), 0);
}

/** Every published configuration, newest first. */
export function listConfigurations(cacheDir: string): StoredConfiguration[] {
  const root = configsDir(cacheDir);
  if (!existsSync(root)) return [];
  const out: StoredConfiguration[] = [];
  for (const key of readdirSync(root)) {
    if (key.startsWith('.')) continue;
    const dir = join(root, key);
    try {
      const m = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { base: string; parent?: string; description?: string; builtAt: string; buildMs: number };
      const used = existsSync(join(dir, '.used')) ? statSync(join(dir, '.used')).mtime.toISOString() : m.builtAt;
      out.push({ key, dir, base: m.base, parent: m.parent, description: m.description, builtAt: m.builtAt, buildMs: m.buildMs, bytes: sizeOf(dir), lastUsed: used });
    } catch {
      // not a published configuration
    }
  }
  return out.sort((a, b) => b.builtAt.localeCompare(a.builtAt));
}

/** Mark a configuration as used now (gc keeps recently used ones). */
export function touchUsed(dir: string): void {
  try {
    const f = join(dir, '.used');
    const fd = openSync(f, 'a');
    closeSync(fd);
    const now = new Date();
    utimesSync(f, now, now);
  } catch {
    // the cache may be read-only for this caller
  }
}

/** Remove one configuration; refuses one that others build on unless forced. */
export function destroyConfiguration(cacheDir: string, key: string, inUse: Set<string>): void {
  const dir = configDir(cacheDir, key);
  if (!isPublished(dir)) throw new HostError(`no configuration ${key} in ${configsDir(cacheDir)}`);
  if (inUse.has(key)) throw new HostError(`configuration ${key} is used by a running job; it is removed once no job uses it (vse gc)`);
  const children = listConfigurations(cacheDir).filter((c) => c.parent === key);
  if (children.length > 0) throw new HostError(`configuration ${key} is the base of ${children.map((c) => c.key).join(', ')}; destroy those first`);
  // unpublish first (manifest gone = not a configuration), then remove the rest
  rmSync(join(dir, 'manifest.json'), { force: true });
  rmSync(dir, { recursive: true, force: true });
}

export interface GcResult {
  removed: string[];
  kept: string[];
  leftovers: number;
}

/**
 * Remove configurations no job on this host uses (nor builds on) that were last used longer ago
 * than `maxAgeMs`, children before parents; and what crashed builds left (temporary directories,
 * dead locks).
 */
export function gcConfigurations(cacheDir: string, inUse: Set<string>, maxAgeMs: number, dryRun: boolean, maxBytes?: number): GcResult {
  const all = listConfigurations(cacheDir);
  const keep = new Set(inUse);
  const now = Date.now();
  for (const c of all) if (now - Date.parse(c.lastUsed) < maxAgeMs) keep.add(c.key);
  // a kept configuration keeps its bases
  const parents = new Map(all.map((c) => [c.key, c.parent]));
  const withBases = (keys: Set<string>): Set<string> => {
    for (const k of [...keys]) for (let p = parents.get(k); p; p = parents.get(p)) keys.add(p);
    return keys;
  };
  withBases(keep);
  if (maxBytes !== undefined) {
    // over the size limit: the least recently used go first, never one a job uses (nor its bases),
    // and a base only once nothing kept builds on it
    const needed = withBases(new Set(inUse));
    const bytes = new Map(all.map((c) => [c.key, c.bytes]));
    let total = [...keep].reduce((n, k) => n + (bytes.get(k) ?? 0), 0);
    const byAge = all.filter((c) => keep.has(c.key) && !needed.has(c.key)).sort((a, b) => a.lastUsed.localeCompare(b.lastUsed));
    // the oldest removable one each time: a base becomes removable as soon as its last child went
    const removable = (c: StoredConfiguration): boolean => keep.has(c.key) && ![...keep].some((k) => parents.get(k) === c.key);
    for (let next = byAge.find(removable); total > maxBytes && next; next = byAge.find(removable)) {
      keep.delete(next.key);
      total -= next.bytes;
    }
  }
  const doomed = all.filter((c) => !keep.has(c.key));
  // children first: a base is removed only after what builds on it
  const depth = (k: string): number => {
    let n = 0;
    for (let p = parents.get(k); p; p = parents.get(p)) n++;
    return n;
  };
  doomed.sort((a, b) => depth(b.key) - depth(a.key));
  let leftovers = 0;
  const root = configsDir(cacheDir);
  if (existsSync(root)) {
    for (const f of readdirSync(root)) {
      const p = join(root, f);
      const old = now - statSync(p).mtimeMs > STALE_MS;
      if ((f.startsWith('.build-') && old) || (f.startsWith('.lock-') && staleness(p) !== undefined) || (!f.startsWith('.') && !isPublished(p) && old)) {
        leftovers++;
        if (!dryRun) rmSync(p, { recursive: true, force: true });
      }
    }
  }
  if (!dryRun) {
    for (const c of doomed) {
      rmSync(join(c.dir, 'manifest.json'), { force: true });
      rmSync(c.dir, { recursive: true, force: true });
    }
  }
  return { removed: doomed.map((c) => c.key), kept: all.filter((c) => keep.has(c.key)).map((c) => c.key), leftovers };
}
