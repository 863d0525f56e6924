import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { schemaJson, standaloneValidator } from '../../lib/descriptor/schema-gen.js';
import { schemaErrors } from '../../lib/descriptor/schema.js';

const shipped = (p: string): string => readFileSync(join(import.meta.dirname, '../..', p), 'utf8');

describe('the schema of the resolved model', () => {
  it('ships as JSON Schema generated from the code (regenerate: make schema)', () => {
    expect(shipped('config/schema/description.schema.json')).toBe(schemaJson());
  });
  it('is checked by the generated validator of that same schema (regenerate: make schema)', () => {
    expect(shipped('lib/descriptor/schema-check.ts')).toBe(standaloneValidator());
  });
  it('reports errors by JSON pointer with what was expected', () => {
    expect(schemaErrors({ name: 'x' }).map((e) => e.expected)).toContain('a "os" value');
    const vm = { memoryMiB: 64, vcpus: 1, diskMiB: 1024, perNode: 1, hypervisor: 'qemu' };
    const d = { name: 'x', os: { base: 'minimal', kernel: {}, packages: [], services: [] }, rtes: [], files: [], build: [], boot: [], vm, resources: { mounts: [], network: { mode: 'private' } } };
    expect(schemaErrors(d)).toEqual([{ pointer: '/vm/memoryMiB', message: 'value out of range', expected: 'at least 96M' }]);
  });
});
