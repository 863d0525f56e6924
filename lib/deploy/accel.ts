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
import { MACHINE, QEMU } from './qemu.js';
import { bootId } from './proc.js';

export interface AccelChoice {
  accel: 'kvm' | 'tcg';
  reason: string;
}

const PROBE_MS = 6000;


/** Boot the kernel under KVM until it prints; otherwise why not. */
function probeKvm(kernel: string): Promise<{ ok: boolean; why: string }> {
  return new Promise((resolve) => {
    const child = spawn(QEMU, [
      '-machine', `${MACHINE},accel=kvm`, '-cpu', 'host', '-nodefaults', '-no-user-config', '-display', 'none',
      '-m', '128M', '-kernel', kernel, '-append', 'console=ttyS0 earlyprintk=serial,ttyS0 panic=-1',
      '-serial', 'stdio', '-no-reboot',
    ], { stdio: ['ignore', 'pipe', 'pipe'] });
    let done = false;
    let stderr = '';
    const finish = (ok: boolean, why: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve({ ok, why });
    };
    const timer = setTimeout(() => finish(false, `the KVM probe printed nothing in ${PROBE_MS / 1000} s (KVM present but hangs)`), PROBE_MS);
    child.stdout.on('data', (d: Buffer) => {
      if (d.toString().includes('Linux')) finish(true, 'KVM probe booted');
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr = (stderr + d.toString()).slice(-2000);
    });
    child.on('exit', (code, signal) => {
      const last = stderr.trim().split('\n').filter((l) => !l.includes('warning:')).slice(-2).join(' / ');
      finish(false, `the KVM probe exited before the kernel printed (${signal ?? `exit ${code}`})${last ? `: ${last}` : ''}`);
    });
    child.on('error', (err) => finish(false, `the KVM probe could not start: ${err.message}`));
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
  const probe = await probeKvm(kernel);
  const choice: AccelChoice = { accel: probe.ok ? 'kvm' : 'tcg', reason: probe.why };
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
