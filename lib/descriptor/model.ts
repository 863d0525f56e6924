/** The resolved description model every later stage works from, built from the merged tree. */
import { dirname, isAbsolute, resolve } from 'node:path';
import type { Node, Origin, Value } from './tree.js';

export type OsBase = 'minimal' | 'debian';
export interface PackageRef { name: string; state: 'present' | 'absent' }
export type EditOp = { op: 'set'; key: string; value: string; separator: string } | { op: 'replace'; pattern: string; with: string } | { op: 'append'; line: string };
export type FileOp =
  | { op: 'import'; path: string; from: string; mode?: string }
  | { op: 'copy'; path: string; from: string }
  | { op: 'link'; path: string; target: string }
  | { op: 'delete'; path: string }
  | { op: 'edit'; path: string; edits: EditOp[] }
  | { op: 'write'; path: string; content: string; mode?: string };

/** A resolved description: what create, deploy and the guest work from. */
export interface Description {
  name: string;
  os: {
    base: OsBase;
    release?: string;
    variant?: string;
    kernel: { package?: string; path?: string };
    packages: PackageRef[];
    services: { name: string; state: 'enabled' | 'disabled' }[];
  };
  rtes: { name: string; packages: PackageRef[]; env: { name: string; value: string }[]; paths: string[] }[];
  files: FileOp[];
  build: { name: string; mode: 'offline' | 'online'; workdir?: string; run: string }[];
  boot: { name: string; value?: string }[];
  vm: { memoryMiB: number; vcpus: number; diskMiB: number; perNode: number; hypervisor: 'qemu' | 'libvirt' | 'any' };
  resources: { mounts: { guest: string; host: string; mode: 'ro' | 'rw' }[]; network: { mode: 'private' | 'none' } };
}

export const VM_DEFAULTS = { memoryMiB: 128, vcpus: 1, diskMiB: 1024, perNode: 1, hypervisor: 'qemu' } as const;

/** JSON pointer of a model value -> where it was set (and the element path for messages). */
export type Locations = Map<string, { origin: Origin; path: string }>;

/** Host paths are relative to the file that names them. */
function hostPath(v: Value): string {
  return isAbsolute(v.value) ? resolve(v.value) : resolve(dirname(v.origin.file), v.value);
}

/** Turn the merged tree into the model; `locations` maps each value back to its file and line. */
export function toModel(root: Node): { model: Description; locations: Locations } {
  const locations: Locations = new Map();
  const at = (pointer: string, v: Value | Node | undefined, path: string): void => {
    if (v) locations.set(pointer, { origin: v.origin, path });
  };
  const str = (n: Node | undefined, attr: string, pointer: string, path: string): string | undefined => {
    const v = n?.attrs.get(attr);
    at(pointer, v, `${path}/@${attr}`);
    return v?.value;
  };
  const num = (n: Node | undefined, attr: string, pointer: string, path: string, dflt: number): number => {
    const s = str(n, attr, pointer, path);
    return s === undefined ? dflt : Number(s);
  };
  const items = (n: Node | undefined, slot: string): [string, Node][] => [...(n?.lists.get(slot)?.items ?? [])];

  locations.set('', { origin: root.origin, path: '/vse' });
  const os = root.singles.get('os');
  const kernel = os?.singles.get('kernel');
  const packages = (n: Node | undefined, slot: string, ptr: string, path: string): PackageRef[] =>
    items(n, slot).map(([key, p], i) => {
      at(`${ptr}/${i}`, p, `${path}/package[${key}]`);
      return { name: key, state: (str(p, 'state', `${ptr}/${i}/state`, `${path}/package[${key}]`) ?? 'present') as PackageRef['state'] };
    });

  const kernelPath = kernel?.attrs.get('path');
  if (kernelPath) at('/os/kernel/path', kernelPath, '/vse/os/kernel/@path');
  const model: Description = {
    name: str(root, 'name', '/name', '/vse') ?? '',
    os: {
      base: (str(os, 'base', '/os/base', '/vse/os') ?? '') as OsBase,
      ...(os?.attrs.has('release') ? { release: str(os, 'release', '/os/release', '/vse/os') } : {}),
      ...(os?.attrs.has('variant') ? { variant: str(os, 'variant', '/os/variant', '/vse/os') } : {}),
      kernel: {
        ...(kernel?.attrs.has('package') ? { package: str(kernel, 'package', '/os/kernel/package', '/vse/os/kernel') } : {}),
        ...(kernelPath ? { path: hostPath(kernelPath) } : {}),
      },
      packages: packages(os, 'packages', '/os/packages', '/vse/os/packages'),
      services: items(os, 'services').map(([key, s], i) => {
        at(`/os/services/${i}`, s, `/vse/os/services/service[${key}]`);
        return { name: key, state: (str(s, 'state', `/os/services/${i}/state`, `/vse/os/services/service[${key}]`) ?? 'enabled') as 'enabled' | 'disabled' };
      }),
    },
    rtes: items(root, 'rte').map(([name, r], i) => {
      const p = `/vse/rte[${name}]`;
      at(`/rtes/${i}`, r, p);
      return {
        name,
        packages: packages(r, 'package', `/rtes/${i}/packages`, p),
        env: items(r, 'env').map(([k, e], j) => ({ name: k, value: str(e, 'value', `/rtes/${i}/env/${j}/value`, `${p}/env[${k}]`) ?? '' })),
        paths: items(r, 'path').map(([k]) => k),
      };
    }),
    files: items(root, 'files').map(([key, f], i): FileOp => {
      const p = `/vse/files/${f.el}[${key}]`;
      const ptr = `/files/${i}`;
      at(ptr, f, p);
      const mode = f.attrs.get('mode') ? { mode: str(f, 'mode', `${ptr}/mode`, p) as string } : {};
      switch (f.el) {
        case 'import': {
          const from = f.attrs.get('from') as Value;
          at(`${ptr}/from`, from, `${p}/@from`);
          return { op: 'import', path: key, from: hostPath(from), ...mode };
        }
        case 'copy':
          return { op: 'copy', path: key, from: str(f, 'from', `${ptr}/from`, p) ?? '' };
        case 'link':
          return { op: 'link', path: key, target: str(f, 'target', `${ptr}/target`, p) ?? '' };
        case 'delete':
          return { op: 'delete', path: key };
        case 'edit':
          return {
            op: 'edit', path: key,
            edits: items(f, 'ops').map(([, e], j): EditOp => {
              at(`${ptr}/edits/${j}`, e, `${p}/${e.el}[${j + 1}]`);
              const a = (k: string): string => e.attrs.get(k)?.value ?? '';
              if (e.el === 'set') return { op: 'set', key: a('key'), value: a('value'), separator: e.attrs.get('separator')?.value ?? '=' };
              if (e.el === 'replace') return { op: 'replace', pattern: a('pattern'), with: a('with') };
              return { op: 'append', line: a('line') };
            }),
          };
        default:
          return { op: 'write', path: key, content: f.text?.value ?? '', ...mode };
      }
    }),
    build: items(root, 'build').map(([name, s], i) => {
      const p = `/vse/build/step[${name}]`;
      at(`/build/${i}`, s, p);
      return {
        name,
        mode: (str(s, 'mode', `/build/${i}/mode`, p) ?? 'offline') as 'offline' | 'online',
        ...(s.attrs.has('workdir') ? { workdir: str(s, 'workdir', `/build/${i}/workdir`, p) } : {}),
        run: s.text?.value ?? '',
      };
    }),
    boot: items(root, 'boot').map(([name, o], i) => {
      at(`/boot/${i}`, o, `/vse/boot/option[${name}]`);
      return { name, ...(o.attrs.has('value') ? { value: str(o, 'value', `/boot/${i}/value`, `/vse/boot/option[${name}]`) } : {}) };
    }),
    vm: (() => {
      const vm = root.singles.get('vm');
      return {
        memoryMiB: num(vm, 'memory', '/vm/memoryMiB', '/vse/vm', VM_DEFAULTS.memoryMiB),
        vcpus: num(vm, 'vcpus', '/vm/vcpus', '/vse/vm', VM_DEFAULTS.vcpus),
        diskMiB: num(vm, 'disk', '/vm/diskMiB', '/vse/vm', VM_DEFAULTS.diskMiB),
        perNode: num(vm, 'perNode', '/vm/perNode', '/vse/vm', VM_DEFAULTS.perNode),
        hypervisor: (str(vm, 'hypervisor', '/vm/hypervisor', '/vse/vm') ?? VM_DEFAULTS.hypervisor) as Description['vm']['hypervisor'],
      };
    })(),
    resources: (() => {
      const res = root.singles.get('resources');
      return {
        mounts: items(res, 'mount').map(([guest, m], i) => {
          const p = `/vse/resources/mount[${guest}]`;
          at(`/resources/mounts/${i}`, m, p);
          const host = m.attrs.get('host') as Value;
          at(`/resources/mounts/${i}/host`, host, `${p}/@host`);
          return { guest, host: hostPath(host), mode: (str(m, 'mode', `/resources/mounts/${i}/mode`, p) ?? 'ro') as 'ro' | 'rw' };
        }),
        network: { mode: (str(res?.singles.get('network'), 'mode', '/resources/network/mode', '/vse/resources/network') ?? 'private') as 'private' | 'none' },
      };
    })(),
  };
  return { model, locations };
}
