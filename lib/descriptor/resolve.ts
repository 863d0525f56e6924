/** Read, validate and resolve a description file into a Description (the submit-time check). */
import { readFileSync } from 'node:fs';
import type { SiteConfig } from '../site/config.js';
import { UserError } from '../util/errors.js';
import { type Description, type Locations, normalise } from './model.js';
import { policyViolations } from './policy.js';
import { DescriptionError, type Problem } from './problem.js';
import { schemaErrors } from './schema.js';
import { parseXml } from './xml.js';

function unitFor(pointer: string, expected: string): string {
  return pointer.endsWith('MiB') ? expected.replace(/(\d+)$/, '$1M') : expected;
}

function locate(file: string, locations: Locations, pointer: string): { file: string; line: number; col: number; path: string } {
  let p = pointer;
  for (;;) {
    const loc = locations.get(p);
    if (loc) return { file, line: loc.line, col: loc.col, path: loc.path };
    if (p === '') return { file, line: 1, col: 1, path: '/vse' };
    p = p.slice(0, p.lastIndexOf('/'));
  }
}

/** Check a description's text; returns the model or every problem found. */
export function resolveText(file: string, bytes: Buffer, site: SiteConfig): { description?: Description; problems: Problem[] } {
  const { root, problems } = parseXml(file, bytes);
  if (!root) return { problems };
  const n = normalise(file, root);
  if (n.problems.length > 0) return { problems: n.problems };
  const out: Problem[] = [];
  for (const e of schemaErrors(n.model)) {
    out.push({ ...locate(file, n.locations, e.pointer), message: e.message, expected: unitFor(e.pointer, e.expected) });
  }
  if (out.length > 0) return { problems: out };
  const description = n.model as unknown as Description;
  for (const v of policyViolations(description, site)) {
    out.push({ ...locate(file, n.locations, v.pointer), message: v.message, expected: v.expected, hint: v.hint });
  }
  return out.length > 0 ? { problems: out } : { description, problems: [] };
}

/** Read a description file with the caller's own rights and resolve it; throws DescriptionError. */
export function resolveFile(file: string, site: SiteConfig): Description {
  let bytes: Buffer;
  try {
    bytes = readFileSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : String(code ?? err);
    throw new UserError(`${file}: cannot read the description: ${why}`, { cause: err });
  }
  const r = resolveText(file, bytes, site);
  if (!r.description) throw new DescriptionError(r.problems);
  return r.description;
}

/**
 * Check a description handed over as JSON (the job's copy, fixed at submission) against the schema
 * and the site policy of this node. `origin` names where it came from in messages.
 */
export function checkResolved(json: string, origin: string, site: SiteConfig): Description {
  let model: unknown;
  try {
    model = JSON.parse(json);
  } catch (err) {
    throw new UserError(`${origin}: the job's description is not valid JSON: ${(err as Error).message}`);
  }
  const errs = schemaErrors(model);
  if (errs.length > 0) {
    throw new UserError(errs.map((e) => `${origin}: ${e.pointer || '/'}: ${e.message}; expected ${unitFor(e.pointer, e.expected)}`).join('\n'));
  }
  const d = model as Description;
  const v = policyViolations(d, site);
  if (v.length > 0) throw new UserError(v.map((x) => `${origin}: ${x.pointer}: ${x.message}; expected ${x.expected}; hint: ${x.hint}`).join('\n'));
  return d;
}
