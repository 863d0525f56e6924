/**
 * The private network of one job's VMs on one node.
 *
 * As root (the prolog): a Linux bridge of the job's own with one tap per VM, no address on the host
 * side and IPv6 off on both, so the host and other jobs are not on it. Names derive from the job
 * directory, so cleanup finds them from nothing but the job and node, even without a state record.
 * Without root (`vse run` on a desktop): a multicast group on loopback (QEMU's socket backend):
 * no kernel state to remove, but any local process could join it, so it is for single-user machines.
 */
import { createHash } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import type { Logger } from '../util/log.js';
import { run } from '../util/run.js';

const IP = '/usr/sbin/ip';

export interface JobNetwork {
  mode: 'bridge' | 'mcast';
  bridge?: string;
  mcast?: string;
  /** Per VM index: the tap (bridge mode). */
  taps: string[];
}

function tag(jobDir: string): string {
  return createHash('sha256').update(jobDir).digest('hex').slice(0, 8);
}

/** Interface names of a job directory: bridge `vseb<hash>`, taps `vset<hash><index>` (at most 15 characters). */
export function networkNames(jobDir: string, count: number): { bridge: string; tapPrefix: string; taps: string[] } {
  const h = tag(jobDir);
  return { bridge: `vseb${h}`, tapPrefix: `vset${h}`, taps: Array.from({ length: count }, (_, i) => `vset${h}${i}`) };
}

/** The private address of VM `index` (10.77.0.0/16; the first VM is 10.77.0.1). */
export function jobAddress(index: number): string {
  const n = index + 1;
  return `10.77.${(n >> 8) & 0xff}.${n & 0xff}`;
}
export const JOB_PREFIX_LEN = 16;

function ipv6Off(dev: string): void {
  const f = `/proc/sys/net/ipv6/conf/${dev}/disable_ipv6`;
  if (existsSync(f)) writeFileSync(f, '1\n');
}

/**
 * Create the job's network for `count` VMs: enough for QEMU to open the taps. They join the
 * bridge and go up in raiseJobNetwork, which may run while the VMs start (their guests send
 * nothing for a second and more).
 */
export async function createJobNetwork(jobDir: string, count: number, log: Logger): Promise<JobNetwork> {
  if (process.getuid?.() !== 0) {
    const h = tag(jobDir);
    const group = `239.255.${parseInt(h.slice(0, 2), 16)}.${parseInt(h.slice(2, 4), 16)}`;
    const port = 20000 + (parseInt(h.slice(4, 8), 16) % 40000);
    return { mode: 'mcast', mcast: `${group}:${port}`, taps: [] };
  }
  const names = networkNames(jobDir, count);
  // two `ip -batch` runs (it stops at the first failing line): make the links, turn IPv6 off on
  // them before any is up (so none gets a link-local address); raiseJobNetwork joins and raises them
  await run([IP, '-batch', '-'], { log, input: [`link add ${names.bridge} type bridge`, ...names.taps.map((t) => `tuntap add dev ${t} mode tap`)].join('\n') + '\n' });
  for (const dev of [names.bridge, ...names.taps]) ipv6Off(dev);
  return { mode: 'bridge', bridge: names.bridge, taps: names.taps };
}

/** The taps join the job's bridge, and all go up (nothing to do for a multicast group). */
export async function raiseJobNetwork(net: JobNetwork, log: Logger): Promise<void> {
  if (net.mode !== 'bridge' || net.bridge === undefined) return;
  await run([IP, '-batch', '-'], { log, input: [...net.taps.map((t) => `link set ${t} master ${net.bridge} up`), `link set ${net.bridge} up`].join('\n') + '\n' });
}

/** Remove the job's bridge and taps, whatever is left of them; returns the names removed. */
export async function teardownJobNetwork(jobDir: string, log: Logger): Promise<string[]> {
  if (process.getuid?.() !== 0) return [];
  const { bridge, tapPrefix } = networkNames(jobDir, 0);
  const r = await run([IP, '-o', 'link', 'show'], { log, allowFailure: true });
  const present = r.stdout.split('\n').map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1]).filter((n): n is string => n !== undefined);
  const ours = present.filter((n) => n === bridge || (n.startsWith(tapPrefix) && /^\d+$/.test(n.slice(tapPrefix.length))));
  // taps first: a bridge goes once nothing hangs on it
  ours.sort((a, b) => Number(a === bridge) - Number(b === bridge));
  const removed: string[] = [];
  for (const n of ours) {
    const d = await run([IP, 'link', 'del', n], { log, allowFailure: true });
    if (d.exitCode === 0) removed.push(n);
    else log.warn(`cannot remove ${n}: ${d.stderr.trim()}`);
  }
  return removed;
}
