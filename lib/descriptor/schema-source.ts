/** JSON Schema of the resolved model (types and ranges; site limits are policy). `make schema` generates its validator. */

const name = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' } as const;
const guestPath = { type: 'string', pattern: '^/' } as const;
const pkg = { type: 'object', additionalProperties: false, required: ['name', 'state'], properties: { name: { type: 'string' }, state: { enum: ['present', 'absent'] } } } as const;
const mode = { type: 'string', pattern: '^[0-7]{4}$' } as const;

export const descriptionSchema = {
  $id: 'https://vse.invalid/schema/description.json',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'os', 'rtes', 'files', 'build', 'boot', 'vm', 'resources'],
  properties: {
    name,
    os: {
      type: 'object', additionalProperties: false, required: ['base', 'kernel', 'packages', 'services'],
      properties: {
        base: { enum: ['minimal', 'debian'] },
        release: name,
        variant: { enum: ['minbase', 'apt', 'required', 'important', 'standard'] },
        kernel: { type: 'object', additionalProperties: false, properties: { package: { type: 'string' }, path: { type: 'string', pattern: '^/' } } },
        packages: { type: 'array', items: pkg },
        services: { type: 'array', items: { type: 'object', additionalProperties: false, required: ['name', 'state'], properties: { name: { type: 'string' }, state: { enum: ['enabled', 'disabled'] } } } },
      },
    },
    rtes: {
      type: 'array',
      items: {
        type: 'object', additionalProperties: false, required: ['name', 'packages', 'env', 'paths'],
        properties: {
          name, packages: { type: 'array', items: pkg },
          env: { type: 'array', items: { type: 'object', additionalProperties: false, required: ['name', 'value'], properties: { name: { type: 'string', pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }, value: { type: 'string' } } } },
          paths: { type: 'array', items: guestPath },
        },
      },
    },
    files: {
      type: 'array',
      items: {
        type: 'object', required: ['op', 'path'],
        properties: {
          op: { enum: ['import', 'copy', 'link', 'delete', 'edit', 'write'] }, path: guestPath, from: { type: 'string' }, target: { type: 'string' },
          mode, content: { type: 'string', maxLength: 65536 }, edits: { type: 'array' },
        },
      },
    },
    build: {
      type: 'array',
      items: { type: 'object', additionalProperties: false, required: ['name', 'mode', 'run'], properties: { name, mode: { enum: ['offline', 'online'] }, workdir: guestPath, run: { type: 'string', minLength: 1 } } },
    },
    boot: {
      type: 'array',
      items: { type: 'object', additionalProperties: false, required: ['name'], properties: { name: { type: 'string', pattern: '^[A-Za-z0-9_][A-Za-z0-9_.-]*$' }, value: { type: 'string', pattern: '^[^\\s"]*$' } } },
    },
    vm: {
      type: 'object', additionalProperties: false, required: ['memoryMiB', 'vcpus', 'diskMiB', 'perNode', 'hypervisor'],
      properties: {
        memoryMiB: { type: 'integer', minimum: 96, maximum: 1048576 },
        vcpus: { type: 'integer', minimum: 1, maximum: 256 },
        diskMiB: { type: 'integer', minimum: 64, maximum: 16777216 },
        perNode: { type: 'integer', minimum: 1, maximum: 1024 },
        hypervisor: { enum: ['qemu', 'libvirt', 'any'] },
      },
    },
    resources: {
      type: 'object', additionalProperties: false, required: ['mounts', 'network'],
      properties: {
        mounts: { type: 'array', items: { type: 'object', additionalProperties: false, required: ['guest', 'host', 'mode'], properties: { guest: guestPath, host: { type: 'string', pattern: '^/' }, mode: { enum: ['ro', 'rw'] } } } },
        network: { type: 'object', additionalProperties: false, required: ['mode'], properties: { mode: { enum: ['private', 'none'] } } },
      },
    },
  },
} as const;

