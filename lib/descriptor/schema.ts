/** Checking the resolved model against its JSON Schema, with the validator ajv generated at build time. */
import { descriptionSchema } from './schema-source.js';
import { validate as check } from './schema-check.js';

export { descriptionSchema };

interface AjvError {
  instancePath: string;
  keyword: string;
  params: Record<string, unknown>;
  message?: string;
}

/** Schema errors as (JSON pointer, message, expected) triples. */
export function schemaErrors(model: unknown): { pointer: string; message: string; expected: string }[] {
  if (check(model)) return [];
  return ((check as unknown as { errors?: AjvError[] }).errors ?? []).map((e) => {
    const p = e.params;
    const mib = e.instancePath.endsWith('MiB');
    const expected =
      e.keyword === 'minimum' ? `at least ${String(p.limit)}${mib ? 'M' : ''}`
      : e.keyword === 'maximum' ? `at most ${String(p.limit)}${mib ? 'M' : ''}`
      : e.keyword === 'enum' ? `one of ${(p.allowedValues as unknown[]).join(', ')}`
      : e.keyword === 'required' ? `a "${String(p.missingProperty)}" value`
      : e.keyword === 'additionalProperties' ? `no "${String(p.additionalProperty)}"`
      : (e.message ?? e.keyword);
    const message = e.keyword === 'minimum' || e.keyword === 'maximum' ? 'value out of range' : e.keyword === 'enum' && e.instancePath === '/os/base' ? 'no OS base' : `invalid value (${e.keyword})`;
    return { pointer: e.instancePath, message, expected };
  });
}
