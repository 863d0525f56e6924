import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { descriptionSchema } from '../../lib/descriptor/schema.js';

describe('the shipped JSON Schema of the resolved model', () => {
  it('is the one the code checks with (regenerate: make schema)', () => {
    const shipped: unknown = JSON.parse(readFileSync(join(import.meta.dirname, '../../config/schema/description.schema.json'), 'utf8'));
    expect(shipped).toEqual(JSON.parse(JSON.stringify(descriptionSchema)));
  });
});
