/** Site configuration: shipped defaults, overridden by the admin's file under sysconfdir. */
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { HostError } from '../util/errors.js';
import { parseSize } from '../util/size.js';
import { installInfo, shippedConfigDir } from './paths.js';

export type Accel = 'auto' | 'kvm' | 'tcg';

export interface SiteConfig {
  stateDir: string;
  cacheDir: string;
  logDir: string;
  /** QEMU drops root to this user (`-runas`) when started by root; `job`: the job's own user (nobody for root's jobs and for builds). */
  qemuUser: string;
  /** Debian package whose kernel the minimal guest boots. */
  kernelPackage: string;
  accel: Accel;
  /** Under TCG: QEMU's translation cache per VM (MiB): host memory per VM against code translated again. */
  tcgCacheMiB: number;
  bootTimeoutSec: number;
  limits: { maxMemoryMiB: number; maxVcpus: number; maxVmsPerNode: number; maxDiskMiB: number; maxMemoryPerNodeMiB: number };
  /** Hypervisors users may ask for. */
  allowedHypervisors: string[];
  /** Host paths VMs may see (mounts, kernel paths), and how. */
  allowedHostPaths: { path: string; modes: ('ro' | 'rw')[] }[];
  /** Admin description directories, searched in order for `extends="name"`. */
  descriptionDirs: string[];
  /** Name of an admin base every description must extend (so its locks hold for every job). */
  requiredBase?: string;
  /** The files that were read, in order (for `vse doctor` and error messages). */
  sources: string[];
  /** `vse gc` removes configurations no job uses that were last used longer ago (default 30 days)... */
  cacheMaxAgeDays?: number;
  /** ...and then the least recently used ones until the cache is no larger than this (MiB; no limit when unset). */
  cacheMaxSizeMiB?: number;
}

interface RawSite {
  stateDir?: string;
  cacheDir?: string;
  logDir?: string;
  qemuUser?: string;
  kernelPackage?: string;
  accel?: string;
  tcgCache?: string;
  bootTimeoutSec?: number;
  limits?: { maxMemory?: string; maxVcpus?: number; maxVmsPerNode?: number; maxDisk?: string; maxMemoryPerNode?: string };
  allowedHypervisors?: string[];
  allowedHostPaths?: { path: string; modes?: ('ro' | 'rw')[] }[];
  descriptionDirs?: string[];
  requiredBase?: string;
  cacheMaxAgeDays?: number;
  cacheMaxSize?: string;
}

function readRaw(file: string): RawSite {
  try {
    const v: unknown = JSON.parse(readFileSync(file, 'utf8'));
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as RawSite;
  } catch (err) {
    throw new HostError(`${file}: cannot read the site config: ${(err as Error).message}`, { cause: err });
  }
}

function cacheSize(text: string, file: string): number {
  const mib = parseSize(text);
  if (mib === undefined || mib <= 0) throw new HostError(`${file}: cacheMaxSize: "${text}" is not a size; expected e.g. "20G" or "500M"`);
  return mib;
}

function tcgCache(text: string, file: string): number {
  const mib = parseSize(text);
  if (mib === undefined || mib < 8 || mib > 4096) throw new HostError(`${file}: tcgCache: "${text}" is not a size from 8M to 4G; expected e.g. "60M"`);
  return mib;
}

/** The admin's site config file (install sysconfdir, or VSE_SITE_CONFIG for tests and desktops). */
export function adminConfigFile(): string {
  return process.env.VSE_SITE_CONFIG ?? join(installInfo.sysconfdir, 'vse', 'site.json');
}

/** Load the site config. Unprivileged users get per-user state and cache directories. */
export function loadSiteConfig(): SiteConfig {
  const shipped = join(shippedConfigDir, 'site.json');
  const sources = [shipped];
  const base = readRaw(shipped);
  const adminFile = adminConfigFile();
  let admin: RawSite = {};
  if (existsSync(adminFile)) {
    admin = readRaw(adminFile);
    sources.push(adminFile);
  }
  const m = { ...base, ...admin, limits: { ...base.limits, ...admin.limits } };
  const accel = m.accel ?? 'auto';
  if (accel !== 'auto' && accel !== 'kvm' && accel !== 'tcg') {
    throw new HostError(`${sources.at(-1)}: accel: "${accel}" is not one of auto, kvm, tcg`);
  }
  const root = process.getuid?.() === 0;
  const uid = process.getuid?.() ?? 0;
  const userRun = join(process.env.XDG_RUNTIME_DIR ?? '/tmp', `vse-${uid}`);
  return {
    stateDir: root || admin.stateDir !== undefined ? (m.stateDir ?? '/run/vse') : userRun,
    cacheDir: root || admin.cacheDir !== undefined ? (m.cacheDir ?? '/var/cache/vse') : join(homedir(), '.cache', 'vse'),
    logDir: root || admin.logDir !== undefined ? (m.logDir ?? '/var/log/vse') : join(userRun, 'log'),
    qemuUser: m.qemuUser ?? 'job',
    kernelPackage: m.kernelPackage ?? 'linux-image-cloud-amd64',
    accel,
    tcgCacheMiB: tcgCache(m.tcgCache ?? '60M', sources.at(-1) ?? 'site config'),
    bootTimeoutSec: m.bootTimeoutSec ?? 120,
    limits: {
      maxMemoryMiB: parseSize(m.limits.maxMemory ?? '4G') ?? 4096,
      maxVcpus: m.limits.maxVcpus ?? 8,
      maxVmsPerNode: m.limits.maxVmsPerNode ?? 16,
      maxDiskMiB: parseSize(m.limits.maxDisk ?? '64G') ?? 65536,
      maxMemoryPerNodeMiB: parseSize(m.limits.maxMemoryPerNode ?? '16G') ?? 16384,
    },
    allowedHypervisors: m.allowedHypervisors ?? ['qemu', 'libvirt'],
    allowedHostPaths: (m.allowedHostPaths ?? []).map((e) => ({ path: e.path, modes: e.modes ?? ['ro'] })),
    ...(m.requiredBase !== undefined ? { requiredBase: m.requiredBase } : {}),
    descriptionDirs: m.descriptionDirs ?? [join(installInfo.sysconfdir, 'vse', 'descriptions'), join(shippedConfigDir, 'descriptions')],
    sources,
    cacheMaxAgeDays: m.cacheMaxAgeDays ?? 30,
    ...(m.cacheMaxSize !== undefined ? { cacheMaxSizeMiB: cacheSize(m.cacheMaxSize, sources.at(-1) ?? 'site config') } : {}),
  };
}
