/**
 * The vse parts every guest carries, whatever its base: the set-up script (lib/guest/setup.sh),
 * vse-task (lib/guest/task.c, built static by `make build`) and, in the minimal guest, the SSH
 * server (Debian's dropbear built static from Debian's source by `make build`:
 * lib/guest/build-dropbear.sh; the Debian base installs the dropbear-bin package instead).
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { packageRoot } from '../site/paths.js';
import { HostError } from '../util/errors.js';
import type { CpioEntry } from './cpio.js';

export const SETUP_SCRIPT = `${packageRoot}/lib/guest/setup.sh`;
export const TASK_BINARY = `${packageRoot}/build/guest/vse-task`;
export const DROPBEAR = `${packageRoot}/build/guest/dropbear`;
export const DROPBEARKEY = `${packageRoot}/build/guest/dropbearkey`;
const DROPBEAR_HINT = 'run make build (it builds dropbear from Debian\'s source: lib/guest/build-dropbear.sh)';

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
    h.update(need(DROPBEAR, DROPBEAR_HINT)).update(need(DROPBEARKEY, DROPBEAR_HINT));
  }
  return h.digest('hex');
}

/** Initramfs entries for the minimal guest: set-up, vse-task, dropbear, passwd basics (every program in it is static). */
export function minimalGuestEntries(): CpioEntry[] {
  const dirs = ['usr', 'usr/lib', 'usr/lib/vse', 'usr/sbin', 'usr/bin', 'etc/dropbear', 'root', 'home', 'var', 'var/log'];
  const text = (path: string, s: string): CpioEntry => ({ path, type: 'file', data: Buffer.from(s) });
  return [
    ...dirs.sort().map((path) => ({ path, type: 'dir' as const })),
    // root's SSH directory is part of the image: under TCG a mkdir at boot is a process of its own
    { path: 'root/.ssh', type: 'dir', mode: 0o700 },
    { path: 'usr/lib/vse/setup.sh', type: 'file', data: setupScript(), mode: 0o755 },
    { path: 'usr/lib/vse/vse-task', type: 'file', data: taskBinary(), mode: 0o755 },
    { path: 'usr/sbin/dropbear', type: 'file', data: need(DROPBEAR, DROPBEAR_HINT), mode: 0o755 },
    { path: 'usr/bin/dropbearkey', type: 'file', data: need(DROPBEARKEY, DROPBEAR_HINT), mode: 0o755 },
    text('etc/passwd', 'root:x:0:0:root:/root:/bin/sh\n'),
    text('etc/group', 'root:x:0:\n'),
    text('etc/shells', '/bin/sh\n'),
  ];
}
