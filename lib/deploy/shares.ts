/**
 * Host directories a job's VMs see (`<resources><mount>`, checked against the site policy before
 * anything starts): virtio-fs, one virtiofsd per share and VM. virtiofsd runs as the job's user,
 * in a user namespace where only that user and group are mapped (vse-userns, lib/deploy/userns.c):
 * its capabilities reach the user's own files only, so the guest, root in it included, gets the
 * job user's rights on the host and never root's. A read-only share is a read-only bind mount in
 * virtiofsd's own mount namespace: the guest cannot write it whatever it does.
 */
import { chownSync, existsSync, mkdirSync, readFileSync, readdirSync, realpathSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../site/paths.js';
import { HostError, UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { run, tail } from '../util/run.js';
import { argvOf, isAlive, sleep, startTimeOf } from './proc.js';

export const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
export const USERNS = `${packageRoot}/build/host/vse-userns`;

export interface ShareRecord {
  tag: string;
  host: string;
  guest: string;
  mode: 'ro' | 'rw';
  socket: string;
  log: string;
  pid?: number;
  startTime?: number;
}

/** The argv that starts virtiofsd for one share of one VM (data, tested as such). */
export function virtiofsdArgs(o: { uid: number; gid: number; host: string; mode: 'ro' | 'rw'; socket: string }): string[] {
  return [USERNS, String(o.uid), String(o.gid), ...(o.mode === 'ro' ? ['--ro', o.host] : []), '--listen', o.socket, '--',
    VIRTIOFSD, '--fd=3', '-o', `source=${o.host}`, '-o', 'sandbox=namespace', '-o', 'cache=auto'];
}

/** Where a host path is in the guest: under the share that covers it (the longest), else undefined. */
export function guestPathOf(shares: Pick<ShareRecord, 'host' | 'guest'>[], hostPath: string): string | undefined {
  let best: Pick<ShareRecord, 'host' | 'guest'> | undefined;
  for (const s of shares) {
    const covers = hostPath === s.host || hostPath.startsWith(s.host === '/' ? '/' : `${s.host}/`);
    if (covers && (best === undefined || s.host.length > best.host.length)) best = s;
  }
  if (best === undefined) return undefined;
  const rest = hostPath.slice(best.host.length).replace(/^\/+/, '');
  return rest === '' ? best.guest : `${best.guest.replace(/\/+$/, '')}/${rest}`;
}

/** The guest's view: `vse.mounts=TAG:PATH:MODE,...` on its kernel command line. */
export function mountsParam(shares: ShareRecord[]): string | undefined {
  return shares.length ? `vse.mounts=${shares.map((s) => `${s.tag}:${s.guest}:${s.mode}`).join(',')}` : undefined;
}

/** Start the virtiofsd of each share for VM `index`; resolves once each listens for QEMU. */
export async function startShares(o: {
  dir: string; index: number; uid: number; gid: number; mounts: { host: string; guest: string; mode: 'ro' | 'rw' }[]; log: Logger;
}): Promise<ShareRecord[]> {
  if (o.mounts.length === 0) return [];
  if (process.getuid?.() !== 0) throw new UserError('host directories can be shared with VMs only when vse runs as root (the prolog); hint: leave out <resources><mount> for vse run as a user');
  for (const p of [USERNS, VIRTIOFSD]) if (!existsSync(p)) throw new HostError(`${p} is missing; hint: ${p === USERNS ? 'run make build' : 'apt-get install qemu-system-x86'}`);
  const fsDir = join(o.dir, 'fs');
  mkdirSync(fsDir, { recursive: true, mode: 0o700 });
  chownSync(fsDir, o.uid, o.gid);
  const shares: ShareRecord[] = [];
  for (const [k, m] of o.mounts.entries()) {
    // the guest reads the list from its kernel command line: words without separators
    if (!/^\/[A-Za-z0-9._/+@-]*$/.test(m.guest)) throw new UserError(`cannot share ${m.host} as ${m.guest}: the guest path may hold letters, digits and . _ / + @ - only`);
    let host: string;
    try {
      host = realpathSync(m.host);
    } catch (err) {
      throw new UserError(`cannot share ${m.host} with the VMs: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'it does not exist' : (err as Error).message}`);
    }
    const s: ShareRecord = { tag: `vse${k}`, host, guest: m.guest, mode: m.mode, socket: join(fsDir, `vm${o.index}-${k}.sock`), log: join(fsDir, `vm${o.index}-${k}.log`) };
    const r = await run(virtiofsdArgs({ uid: o.uid, gid: o.gid, host, mode: m.mode, socket: s.socket }), { log: o.log, stderrFile: s.log, timeoutMs: 10_000 });
    s.pid = Number(r.stdout.trim());
    s.startTime = startTimeOf(s.pid);
    writeFileSync(`${s.socket}.pid`, `${s.pid}\n`); // for cleanup, before anything else can fail
    shares.push(s);
    // it says when it waits for QEMU; if it ends first, its log says why (e.g. the user cannot read the directory)
    for (let i = 0; ; i++) {
      const text = existsSync(s.log) ? readFileSync(s.log, 'utf8') : '';
      if (text.includes('Waiting for vhost-user socket connection')) break;
      if (!isAlive(s.pid) || i > 500) {
        throw new UserError(`cannot share ${m.host} with the VMs as ${m.guest} (${m.mode}): virtiofsd, running with the job user's rights, ${isAlive(s.pid) ? 'did not start in time' : 'stopped'}:\n${tail(text, 5)}`);
      }
      await sleep(10);
    }
  }
  return shares;
}

/** virtiofsd processes of a job directory, from the pid files startShares wrote (argv checked: never another program). */
export function sharePids(dir: string): number[] {
  const fsDir = join(dir, 'fs');
  if (!existsSync(fsDir)) return [];
  const pids: number[] = [];
  for (const f of readdirSync(fsDir).filter((n) => n.endsWith('.sock.pid'))) {
    const pid = Number(readFileSync(join(fsDir, f), 'utf8').trim());
    if (Number.isInteger(pid) && pid > 1 && argvOf(pid)?.[0] === VIRTIOFSD) pids.push(pid);
  }
  return pids;
}
