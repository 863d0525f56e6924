/** Site policy on the resolved description: limits, allowed hypervisors, host paths VMs may see. */
import { constants, accessSync, realpathSync } from 'node:fs';
import { sep } from 'node:path';
import type { SiteConfig } from '../site/config.js';
import { formatSize } from '../util/size.js';
import type { Description } from './model.js';

/** OS bases the configuration tools of this version can build. */
export const BUILDABLE_BASES: string[] = ['minimal', 'debian'];

/** What this version's configuration tools cannot build (checked at submission and on the node, not by the language). */
export function capabilityViolations(d: Description): PolicyViolation[] {
  const out: PolicyViolation[] = [];
  if (!BUILDABLE_BASES.includes(d.os.base)) {
    out.push({ pointer: '/os/base', message: `this version of vse cannot build the ${d.os.base} base yet`, expected: `one of ${BUILDABLE_BASES.join(', ')}`, hint: 'extend "minimal" for now' });
  } else if (d.os.base === 'minimal') {
    // the busybox guest runs from memory and has no package manager or service manager
    const needs = (pointer: string, what: string): void => {
      out.push({ pointer, message: `${what} needs a Debian base`, expected: 'no packages, services or online steps on the minimal base', hint: 'the minimal guest is busybox in memory; use os base="debian" for packages' });
    };
    if (d.os.packages.length > 0) needs('/os/packages/0', 'installing or removing packages');
    if (d.os.services.length > 0) needs('/os/services/0', 'enabling or disabling services');
    d.rtes.forEach((r, i) => {
      if (r.packages.length > 0) needs(`/rtes/${i}/packages/0`, `runtime environment "${r.name}" with packages`);
    });
    d.build.forEach((s, i) => {
      if (s.mode === 'online') needs(`/build/${i}/mode`, `online build step "${s.name}"`);
    });
  }

  return out;
}

export interface PolicyViolation {
  pointer: string;
  message: string;
  expected: string;
  hint: string;
}

export interface PolicyOptions {
  /** Check that imported host files are readable by the caller (true at submission, as the user). */
  checkReadable: boolean;
}

function inside(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir.endsWith(sep) ? dir : `${dir}${sep}`);
}

/** Where a host path really leads (all symlinks and `..` resolved), or why it cannot be used. */
function real(path: string): { path?: string; why?: string } {
  try {
    return { path: realpathSync(path) };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return { why: code === 'ENOENT' ? 'does not exist' : code === 'EACCES' ? 'is not accessible to you' : `cannot be resolved (${code ?? String(err)})` };
  }
}

/** Every way the description exceeds what the site allows. */
export function policyViolations(d: Description, site: SiteConfig, opts: PolicyOptions): PolicyViolation[] {
  const out: PolicyViolation[] = [];
  const by = `limit set by the site policy (${site.sources.at(-1)})`;
  const lim = site.limits;
  const over = (pointer: string, what: string, value: string, max: string, hint = by): void => {
    out.push({ pointer, message: `${what} ${value} exceeds the site limit`, expected: `at most ${max}`, hint });
  };
  if (d.vm.memoryMiB > lim.maxMemoryMiB) over('/vm/memoryMiB', 'memory', formatSize(d.vm.memoryMiB), formatSize(lim.maxMemoryMiB));
  if (d.vm.vcpus > lim.maxVcpus) over('/vm/vcpus', 'vCPUs', String(d.vm.vcpus), String(lim.maxVcpus));
  if (d.vm.perNode > lim.maxVmsPerNode) over('/vm/perNode', 'VMs per node', String(d.vm.perNode), String(lim.maxVmsPerNode), `${by}; ask for more nodes instead`);
  if (d.vm.diskMiB > lim.maxDiskMiB) over('/vm/diskMiB', 'disk', formatSize(d.vm.diskMiB), formatSize(lim.maxDiskMiB));
  const perNode = d.vm.memoryMiB * d.vm.perNode;
  if (d.vm.memoryMiB <= lim.maxMemoryMiB && perNode > lim.maxMemoryPerNodeMiB) {
    over('/vm/perNode', 'memory per node', `${formatSize(perNode)} (${d.vm.perNode} x ${formatSize(d.vm.memoryMiB)})`, formatSize(lim.maxMemoryPerNodeMiB), `${by}; fewer or smaller VMs per node`);
  }
  if (d.vm.hypervisor !== 'any' && !site.allowedHypervisors.includes(d.vm.hypervisor)) {
    out.push({ pointer: '/vm/hypervisor', message: `hypervisor ${d.vm.hypervisor} is not allowed here`, expected: `one of ${[...site.allowedHypervisors, 'any'].join(', ')}`, hint: by });
  }

  const allow = site.allowedHostPaths.map((e) => ({ ...e, real: real(e.path).path }));
  const hostPath = (pointer: string, path: string, mode: 'ro' | 'rw', what: string): void => {
    const r = real(path);
    if (!r.path) {
      out.push({ pointer, message: `${what} ${path} ${r.why}`, expected: 'an existing host path', hint: 'paths are resolved on the submit host, and again on each node' });
      return;
    }
    const entry = allow.find((e) => e.real !== undefined && inside(r.path as string, e.real));
    const shown = r.path === path ? path : `${path} (which leads to ${r.path})`;
    if (!entry) {
      const allowed = site.allowedHostPaths.map((e) => `${e.path} (${e.modes.join('/')})`).join(', ');
      out.push({ pointer, message: `${what} ${shown} is outside the host paths the site allows`, expected: allowed ? `a path under ${allowed}` : 'no host paths (this site allows none)', hint: `host paths VMs may see are set by the site policy (${site.sources.at(-1)})` });
    } else if (!entry.modes.includes(mode)) {
      out.push({ pointer, message: `${what} ${shown} may not be ${mode === 'rw' ? 'writable' : 'read'}`, expected: `mode ${entry.modes.join(' or ')}`, hint: `the site allows ${entry.path} as ${entry.modes.join('/')}` });
    }
  };
  d.resources.mounts.forEach((m, i) => hostPath(`/resources/mounts/${i}/host`, m.host, m.mode, 'host path'));
  if (d.os.kernel.path !== undefined) hostPath('/os/kernel/path', d.os.kernel.path, 'ro', 'kernel');
  if (opts.checkReadable) {
    d.files.forEach((f, i) => {
      if (f.op !== 'import') return;
      try {
        accessSync(f.from, constants.R_OK);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        out.push({ pointer: `/files/${i}/from`, message: `${f.from} ${code === 'ENOENT' ? 'does not exist' : 'is not readable by you'}`, expected: 'a host file or directory you can read', hint: 'files are copied into the image with your rights, never root\'s' });
      }
    });
  }
  return out;
}
