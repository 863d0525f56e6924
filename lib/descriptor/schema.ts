/** JSON Schema of the normalised model, checked with ajv (also on the prolog side, on trusted ground). */
import { Ajv, type ErrorObject } from 'ajv';
import { OS_BASES } from './model.js';

export const descriptionSchema = {
  $id: 'https://vse.invalid/schema/description.json',
  type: 'object',
  additionalProperties: false,
  required: ['name', 'os', 'vm'],
  properties: {
    name: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' },
    os: {
      type: 'object',
      additionalProperties: false,
      required: ['base'],
      properties: { base: { enum: [...OS_BASES] } },
    },
    vm: {
      type: 'object',
      additionalProperties: false,
      required: ['memoryMiB', 'vcpus', 'perNode'],
      properties: {
        memoryMiB: { type: 'integer', minimum: 96, maximum: 1048576 },
        vcpus: { type: 'integer', minimum: 1, maximum: 256 },
        perNode: { type: 'integer', minimum: 1, maximum: 1024 },
      },
    },
  },
} as const;

const ajv = new Ajv({ allErrors: true, strict: true });
const check = ajv.compile(descriptionSchema);

/** Schema errors as (JSON pointer, message, expected) triples. */
export function schemaErrors(model: unknown): { pointer: string; message: string; expected: string }[] {
  if (check(model)) return [];
  return (check.errors ?? []).map((e: ErrorObject) => {
    const p = e.params as Record<string, unknown>;
    const expected =
      e.keyword === 'minimum' ? `at least ${String(p.limit)}`
      : e.keyword === 'maximum' ? `at most ${String(p.limit)}`
      : e.keyword === 'enum' ? `one of ${(p.allowedValues as unknown[]).join(', ')}`
      : e.keyword === 'required' ? `a "${String(p.missingProperty)}" value`
      : e.keyword === 'additionalProperties' ? `no "${String(p.additionalProperty)}"`
      : (e.message ?? e.keyword);
    return { pointer: e.instancePath, message: `value ${e.keyword === 'required' || e.keyword === 'additionalProperties' ? 'incomplete' : 'out of range'}`, expected };
  });
}
