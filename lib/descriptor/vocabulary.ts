/**
 * The description language: every element, its attributes and their kinds, which children are
 * single and which form lists, and the identity key of each list item. Everything else (parsing,
 * merging, locks, the model) is driven by this table. docs/descriptions.md documents it.
 */

export type AttrKind =
  | 'name' // identifiers: letters, digits, . _ - (63 max)
  | 'debname' // a Debian package name
  | 'size' // 512M, 2G
  | 'count' // a whole number
  | 'guestpath' // an absolute path inside the guest
  | 'hostpath' // a host path: absolute, or relative to the description's directory
  | 'text' // any single-line text
  | 'envname' // environment variable name
  | 'bootname' // kernel parameter name
  | 'bootvalue' // kernel parameter value (no spaces or quotes)
  | 'regex' // a JavaScript regular expression
  | 'mode' // octal file mode, e.g. 0644
  | 'bool'
  | { oneOf: readonly string[] };

export interface AttrSpec {
  kind: AttrKind;
  required?: boolean;
  doc: string;
}

export interface ListSpec {
  /** Element names that may appear as items. */
  items: readonly string[];
  /** Attribute that identifies an item across layers; absent: a sequence, replaced as a whole. */
  key?: string;
  /** Order matters (boot options, build steps): items keep their place; `before`/`after` move them. */
  ordered?: boolean;
  /** Items sit inside this container element (`<packages>`); absent: directly in the parent. */
  container?: string;
}

export interface ElementSpec {
  doc: string;
  attrs: Record<string, AttrSpec>;
  /** Children that appear at most once, merged attribute by attribute. */
  singles?: readonly string[];
  /** List slots by name. */
  lists?: Record<string, ListSpec>;
  /** Text content: a file's content, a build step's command. */
  text?: 'required' | 'optional';
}

const OS_BASES = ['minimal', 'debian'] as const;

export const VOCABULARY: Record<string, ElementSpec> = {
  vse: {
    doc: 'the root: one system environment',
    attrs: {
      name: { kind: 'name', required: true, doc: 'name of the environment' },
      extends: { kind: 'text', doc: 'base description: a name in the admin directories, or a path relative to this file' },
    },
    singles: ['os', 'vm', 'resources'],
    lists: {
      rte: { items: ['rte'], key: 'name' },
      files: { items: ['import', 'copy', 'link', 'delete', 'edit', 'write'], key: 'path', container: 'files', ordered: true },
      build: { items: ['step'], key: 'name', container: 'build', ordered: true },
      boot: { items: ['option'], key: 'name', container: 'boot', ordered: true },
    },
  },
  os: {
    doc: 'the guest operating system',
    attrs: {
      base: { kind: { oneOf: OS_BASES }, doc: 'minimal (busybox) or debian' },
      release: { kind: 'name', doc: 'Debian release, e.g. bookworm' },
      variant: { kind: { oneOf: ['minbase', 'apt', 'required', 'important', 'standard'] }, doc: 'mmdebstrap variant' },
    },
    singles: ['kernel'],
    lists: {
      packages: { items: ['package'], key: 'name', container: 'packages' },
      services: { items: ['service'], key: 'name', container: 'services' },
    },
  },
  kernel: {
    doc: 'the guest kernel: a Debian package, or a file on the host',
    attrs: {
      package: { kind: 'debname', doc: 'kernel package, e.g. linux-image-cloud-amd64' },
      path: { kind: 'hostpath', doc: 'a kernel image on the host (must be allowed by the site policy)' },
    },
  },
  package: {
    doc: 'a software package, installed (present) or removed (absent)',
    attrs: {
      name: { kind: 'debname', required: true, doc: 'package name' },
      state: { kind: { oneOf: ['present', 'absent'] }, doc: 'present (default) or absent' },
    },
  },
  service: {
    doc: 'a system service enabled or disabled at boot',
    attrs: {
      name: { kind: 'name', required: true, doc: 'service (unit) name' },
      state: { kind: { oneOf: ['enabled', 'disabled'] }, required: true, doc: 'enabled or disabled' },
    },
  },
  rte: {
    doc: 'a runtime environment an application needs (an MPI, a BLAS)',
    attrs: { name: { kind: 'name', required: true, doc: 'name of the runtime environment' } },
    lists: {
      package: { items: ['package'], key: 'name' },
      env: { items: ['env'], key: 'name' },
      path: { items: ['path'], key: 'dir', ordered: true },
    },
  },
  env: {
    doc: 'an environment variable set for the job in the guest',
    attrs: {
      name: { kind: 'envname', required: true, doc: 'variable name' },
      value: { kind: 'text', required: true, doc: 'value' },
    },
  },
  path: {
    doc: 'a directory put in front of PATH in the guest',
    attrs: { dir: { kind: 'guestpath', required: true, doc: 'directory in the guest' } },
  },
  import: {
    doc: 'copy a file or directory from the host into the image (read with the job user\'s rights)',
    attrs: {
      path: { kind: 'guestpath', required: true, doc: 'destination in the guest' },
      from: { kind: 'hostpath', required: true, doc: 'source on the host' },
      mode: { kind: 'mode', doc: 'file mode, e.g. 0644' },
    },
  },
  copy: {
    doc: 'copy a file or directory within the image',
    attrs: {
      path: { kind: 'guestpath', required: true, doc: 'destination' },
      from: { kind: 'guestpath', required: true, doc: 'source in the guest' },
    },
  },
  link: {
    doc: 'a symbolic link within the image',
    attrs: {
      path: { kind: 'guestpath', required: true, doc: 'the link' },
      target: { kind: 'text', required: true, doc: 'what it points to' },
    },
  },
  delete: {
    doc: 'delete a file or directory in the image',
    attrs: { path: { kind: 'guestpath', required: true, doc: 'what to delete' } },
  },
  edit: {
    doc: 'change an existing file in the image',
    attrs: { path: { kind: 'guestpath', required: true, doc: 'the file' } },
    lists: { ops: { items: ['set', 'replace', 'append'] } },
  },
  set: {
    doc: 'set `key<separator>value`, replacing the line that sets the key or appending one',
    attrs: {
      key: { kind: 'text', required: true, doc: 'the key' },
      value: { kind: 'text', required: true, doc: 'its value' },
      separator: { kind: 'text', doc: 'between key and value (default "=")' },
    },
  },
  replace: {
    doc: 'replace every match of a regular expression, line by line',
    attrs: {
      pattern: { kind: 'regex', required: true, doc: 'regular expression' },
      with: { kind: 'text', required: true, doc: 'replacement ($1 for groups)' },
    },
  },
  append: {
    doc: 'append a line unless the file already has it',
    attrs: { line: { kind: 'text', required: true, doc: 'the line' } },
  },
  write: {
    doc: 'write a whole file (the element\'s text)',
    attrs: {
      path: { kind: 'guestpath', required: true, doc: 'the file' },
      mode: { kind: 'mode', doc: 'file mode, e.g. 0644' },
    },
    text: 'optional',
  },
  step: {
    doc: 'a build step: a shell command run inside the guest or an unprivileged sandbox, never as root on the host',
    attrs: {
      name: { kind: 'name', required: true, doc: 'name of the step' },
      mode: { kind: { oneOf: ['offline', 'online'] }, doc: 'offline (default: on the image) or online (in a running VM)' },
      workdir: { kind: 'guestpath', doc: 'working directory in the guest' },
    },
    text: 'required',
  },
  option: {
    doc: 'a kernel command-line option (`name` or `name=value`)',
    attrs: {
      name: { kind: 'bootname', required: true, doc: 'parameter name' },
      value: { kind: 'bootvalue', doc: 'parameter value' },
    },
  },
  vm: {
    doc: 'the virtual machines: size and number per node',
    attrs: {
      memory: { kind: 'size', doc: 'guest memory (default 128M)' },
      vcpus: { kind: 'count', doc: 'virtual CPUs (default 1)' },
      disk: { kind: 'size', doc: 'disk size (default 1G)' },
      perNode: { kind: 'count', doc: 'VMs per node (default 1); more than the cores gives an oversubscribed virtual cluster' },
      hypervisor: { kind: { oneOf: ['qemu', 'libvirt', 'any'] }, doc: 'qemu (default), libvirt or any' },
    },
  },
  resources: {
    doc: 'external resources the VMs reach',
    attrs: {},
    singles: ['network'],
    lists: { mount: { items: ['mount'], key: 'guest' } },
  },
  mount: {
    doc: 'a host path (e.g. a parallel file system) visible in the guest',
    attrs: {
      guest: { kind: 'guestpath', required: true, doc: 'where it appears in the guest' },
      host: { kind: 'hostpath', required: true, doc: 'the host path (must be allowed by the site policy)' },
      mode: { kind: { oneOf: ['ro', 'rw'] }, doc: 'ro (default) or rw' },
    },
  },
  network: {
    doc: 'the network between the job\'s VMs',
    attrs: { mode: { kind: { oneOf: ['private', 'none'] }, doc: 'private (default) or none' } },
  },
};

/** Attributes every list item, single element or container may carry: how a layer applies it. */
export const DIRECTIVES = {
  action: 'remove: delete the inherited item with this key',
  replace: 'true: replace the inherited element as a whole instead of merging into it',
  locked: 'true, or a list of attribute names: later layers cannot change it (admin layers only)',
  before: 'key of the item this one goes before (ordered lists)',
  after: 'key of the item this one goes after (ordered lists)',
} as const;

/** Container element name -> the parent element and list slot it fills. */
export const CONTAINERS: Record<string, { parent: string; slot: string }> = Object.fromEntries(
  Object.entries(VOCABULARY).flatMap(([parent, spec]) =>
    Object.entries(spec.lists ?? {}).flatMap(([slot, l]) => (l.container ? [[l.container, { parent, slot }]] : [])),
  ),
);
