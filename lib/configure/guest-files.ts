/**
 * The vse parts every guest carries, whatever its base: the set-up script (lib/guest/setup.sh),
 * vse-task (lib/guest/task.c, built static by `make build`) and, in the minimal guest, the SSH
 * server (Debian's dropbear with the shared libraries it needs; the Debian base installs the
 * dropbear-bin package instead).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { packageRoot } from '../site/paths.js';
import { HostError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { run } from '../util/run.js';
import type { CpioEntry } from './cpio.js';

export const SETUP_SCRIPT = `${packageRoot}/lib/guest/setup.sh`;
export const TASK_BINARY = `${packageRoot}/build/guest/vse-task`;
export const DROPBEAR = '/usr/sbin/dropbear';
export const DROPBEARKEY = '/usr/bin/dropbearkey';

function need(path: string, hint: string): Buffer {
  if (!existsSync(path)) throw new HostError(`${path} is missing; hint: ${hint}`);
  return readFileSync(path);
}

export function setupScript(): Buffer {
  return need(SETUP_SCRIPT, 'reinstall vse');
}

export function taskBinary(): Buffer {
  return need(TASK_BINARY, 'run make build (it compiles lib/guest/task.c)');
}

/** A digest of the parts above, for configuration keys. */
export function guestFilesDigest(withDropbear: boolean): string {
  const h = createHash('sha256').update(setupScript()).update(taskBinary());
  if (withDropbear) {
    h.update(need(DROPBEAR, 'apt-get install dropbear-bin')).update(need(DROPBEARKEY, 'apt-get install dropbear-bin'));
  }
  return h.digest('hex');
}

/** Shared libraries (and the loader) a dynamic program needs, as ldd lists them. */
async function sharedLibraries(program: string, log: Logger): Promise<string[]> {
  const r = await run(['/usr/bin/ldd', program], { log, env: { PATH: '/usr/bin:/bin', LC_ALL: 'C' } });
  const libs: string[] = [];
  for (const line of r.stdout.split('\n')) {
    const m = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (m?.[1]) libs.push(m[1]);
  }
  return libs;
}

/** Initramfs entries for the minimal guest: set-up, vse-task, dropbear and its libraries, passwd basics. */
export async function minimalGuestEntries(log: Logger): Promise<CpioEntry[]> {
  const libs = new Set<string>();
  for (const p of [DROPBEAR, DROPBEARKEY]) for (const l of await sharedLibraries(p, log)) libs.add(l);
  const dirs = new Set<string>(['usr', 'usr/lib', 'usr/lib/vse', 'usr/sbin', 'usr/bin', 'etc/dropbear', 'root', 'home', 'var', 'var/log']);
  for (const l of libs) {
    const parts = l.slice(1).split('/');
    for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
  }
  const text = (path: string, s: string): CpioEntry => ({ path, type: 'file', data: Buffer.from(s) });
  return [
    ...[...dirs].sort().map((path) => ({ path, type: 'dir' as const })),
    { path: 'usr/lib/vse/setup.sh', type: 'file', data: setupScript(), mode: 0o755 },
    { path: 'usr/lib/vse/vse-task', type: 'file', data: taskBinary(), mode: 0o755 },
    { path: 'usr/sbin/dropbear', type: 'file', data: readFileSync(DROPBEAR), mode: 0o755 },
    { path: 'usr/bin/dropbearkey', type: 'file', data: readFileSync(DROPBEARKEY), mode: 0o755 },
    ...[...libs].sort().map((l) => ({ path: l.slice(1), type: 'file' as const, data: readFileSync(realpathSync(l)), mode: 0o755 })),
    text('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n'),
    text('etc/group', 'root:x:0:\n'),
    text('etc/shells', '/bin/sh\n'),
  ];
}
