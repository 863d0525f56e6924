/**
 * KVM when it actually works, TCG otherwise. /dev/kvm can exist and still hang a real boot, so the
 * probe boots the guest kernel under KVM and waits for its first console line. The verdict is kept
 * per host boot (and QEMU binary) in the state directory.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Accel } from '../site/config.js';
import type { Logger } from '../util/log.js';
import { QEMU } from './qemu.js';

export interface AccelChoice {
  accel: 'kvm' | 'tcg';
  reason: string;
}

const PROBE_MS = 6000;

function bootId(): string {
  try {
    return readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    return 'unknown';
  }
}

/** Boot the kernel under KVM until it prints; false if it stays silent. */
function probeKvm(kernel: string): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn(QEMU, [
      '-machine', 'pc,accel=kvm', '-cpu', 'host', '-nodefaults', '-no-user-config', '-display', 'none',
      '-m', '128M', '-kernel', kernel, '-append', 'console=ttyS0 earlyprintk=serial,ttyS0 panic=-1',
      '-serial', 'stdio', '-no-reboot',
    ], { stdio: ['ignore', 'pipe', 'ignore'] });
    let done = false;
    const finish = (ok: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve(ok);
    };
    const timer = setTimeout(() => finish(false), PROBE_MS);
    child.stdout.on('data', (d: Buffer) => {
      if (d.toString().includes('Linux')) finish(true);
    });
    child.on('exit', () => finish(false));
    child.on('error', () => finish(false));
  });
}

/** Decide the accelerator for this host: site setting, /dev/kvm, then a cached or fresh probe. */
export async function chooseAccel(setting: Accel, kernel: string, stateDir: string, log: Logger): Promise<AccelChoice> {
  if (setting === 'tcg') return { accel: 'tcg', reason: 'site config sets accel=tcg' };
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    if (setting === 'kvm') log.warn('site config asks for kvm but /dev/kvm is not usable; using tcg');
    return { accel: 'tcg', reason: existsSync('/dev/kvm') ? '/dev/kvm is not accessible' : 'no /dev/kvm' };
  }
  const cacheFile = join(stateDir, 'accel.json');
  const stamp = `${bootId()} ${statSync(QEMU).mtimeMs}`;
  try {
    const cached = JSON.parse(readFileSync(cacheFile, 'utf8')) as AccelChoice & { stamp: string };
    if (cached.stamp === stamp) return { accel: cached.accel, reason: cached.reason };
  } catch {
    // no verdict yet
  }
  log.info('probing KVM (a short boot under -accel kvm)');
  const ok = await probeKvm(kernel);
  const choice: AccelChoice = ok
    ? { accel: 'kvm', reason: 'KVM probe booted' }
    : { accel: 'tcg', reason: `KVM probe printed nothing in ${PROBE_MS / 1000} s (KVM present but not working)` };
  try {
    mkdirSync(stateDir, { recursive: true, mode: 0o755 });
    const tmpFile = `${cacheFile}.${process.pid}`;
    writeFileSync(tmpFile, JSON.stringify({ ...choice, stamp }));
    renameSync(tmpFile, cacheFile);
  } catch {
    // the verdict is only a cache
  }
  return choice;
}
