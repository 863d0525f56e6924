/**
 * Resolve a description: load its chain of layers, merge them, then check the merged result
 * against the schema, the admin locks and the site policy. Every problem is reported, not only the
 * first. The same code runs at submission (as the user) and in the prolog (as root, on the job's
 * copy of the user's layers and this node's admin layers).
 */
import { resolve as resolvePath } from 'node:path';
import type { SiteConfig } from '../site/config.js';
import { UserError } from '../util/errors.js';
import { type Bundle, type ChainLayer, loadChain } from './layers.js';
import { LockBook } from './locks.js';
import { mergeLayers } from './merge.js';
import { type Description, type Locations, toModel } from './model.js';
import { capabilityViolations, policyViolations } from './policy.js';
import { DescriptionError, type Problem } from './problem.js';
import { schemaErrors } from './schema.js';
import { type Node, buildLayer } from './tree.js';

export interface Resolution {
  description?: Description;
  problems: Problem[];
  warnings: string[];
  layers: { file: string; admin: boolean }[];
  tree?: Node;
  locations?: Locations;
  chain: ChainLayer[];
}

export interface ResolveOptions {
  /** Resolve from the job's copy instead of the file system (the prolog). */
  bundle?: Bundle;
  /** Check that host files to import are readable by the caller (at submission). */
  checkReadable?: boolean;
  /** Also check that this version can build it (submission and node; the language alone does not). */
  buildable?: boolean;
}

function locate(locations: Locations, pointer: string): { file: string; line: number; col: number; path: string } {
  let p = pointer;
  for (;;) {
    const loc = locations.get(p);
    if (loc) return { file: loc.origin.file, line: loc.origin.line, col: loc.origin.col, path: loc.path };
    if (p === '') return { file: '?', line: 1, col: 1, path: '/vse' };
    p = p.slice(0, p.lastIndexOf('/'));
  }
}

/** Resolve `file` (or the bundle's file) against the site config. */
export function resolveDescription(file: string, site: SiteConfig, opts: ResolveOptions = {}): Resolution {
  const problems: Problem[] = [];
  const warnings: string[] = [];
  const chain = loadChain(file, { dirs: site.descriptionDirs, bundle: opts.bundle, problems, warnings });
  const out: Resolution = { problems, warnings, layers: chain.map((l) => ({ file: l.file, admin: l.admin })), chain };
  if (problems.length > 0 || chain.length === 0) return out;
  if (site.requiredBase !== undefined && !chain.some((l) => l.admin && l.root.attrs.get('name')?.value === site.requiredBase)) {
    const top = chain.at(-1) as ChainLayer;
    const ext = top.root.attrs.get('extends');
    problems.push({
      file: top.file, line: ext?.line ?? top.root.line, col: ext?.col ?? top.root.col, path: ext ? '/vse/@extends' : '/vse',
      message: `the description does not extend the site's base "${site.requiredBase}"`, expected: `extends="${site.requiredBase}" (directly or through your own bases)`,
      hint: `this site requires every description to build on "${site.requiredBase}" (site policy ${site.sources.at(-1)})`,
    });
    return out;
  }

  const trees = chain.map((l, layer) => buildLayer(l.root, { file: l.file, layer, admin: l.admin, problems }).node);
  chain.forEach((l, i) => {
    const t = trees[i];
    if (t && !l.admin) {
      const o = LockBook.ignoredLocks(t);
      if (o) warnings.push(`${o.file}:${o.line}:${o.col}: locked has no effect here: only layers in the admin directories can lock`);
    }
  });
  if (problems.length > 0 || trees.some((t) => !t)) return out;

  const locks = new LockBook();
  const merged = mergeLayers(trees as Node[], { problems }, (m, layer, i) => {
    if (chain[i]?.admin) locks.afterAdminLayer(m, layer, i);
  });
  if (!merged) return out;
  out.tree = merged;
  problems.push(...locks.check(merged));

  const { model, locations } = toModel(merged);
  out.locations = locations;
  for (const e of schemaErrors(model)) {
    const at = locate(locations, e.pointer);
    problems.push({ ...at, message: e.pointer === '/os/base' ? 'no OS base' : e.message, expected: e.expected, hint: e.pointer === '/os/base' ? 'set <os base="minimal"/> (or debian), or extend a base description' : undefined });
  }
  if (problems.length > 0) return out;
  const violations = [...policyViolations(model, site, { checkReadable: opts.checkReadable ?? false }), ...(opts.buildable ? capabilityViolations(model) : [])];
  for (const v of violations) {
    problems.push({ ...locate(locations, v.pointer), message: v.message, expected: v.expected, hint: v.hint });
  }
  if (problems.length === 0) out.description = model;
  return out;
}

/** Resolve a file at submission, as the user; throws DescriptionError listing every problem. */
export function resolveFile(file: string, site: SiteConfig): Resolution & { description: Description } {
  const r = resolveDescription(file, site, { checkReadable: true, buildable: true });
  if (!r.description) throw new DescriptionError(r.problems, r.warnings);
  return r as Resolution & { description: Description };
}

/** The job's copy: every layer that is not an admin layer, as it was at submission. */
export function makeBundle(r: Resolution): Bundle {
  const top = r.chain.at(-1);
  return { v: 1, file: top ? resolvePath(top.file) : '', layers: r.chain.filter((l) => !l.admin).map((l) => ({ path: l.file, text: l.text })) };
}

/** Largest bundle that fits one environment string of the prolog (Linux: 128 KiB). */
export const MAX_BUNDLE_BYTES = 120 * 1024;

/** The prolog's side: resolve the job's bundle against this node's admin layers and policy. */
export function resolveBundle(json: string, origin: string, site: SiteConfig, buildable = true): Description {
  let bundle: Bundle;
  try {
    bundle = JSON.parse(json) as Bundle;
    if (bundle.v !== 1 || typeof bundle.file !== 'string' || !Array.isArray(bundle.layers)) throw new Error('not a vse description bundle (v1)');
  } catch (err) {
    throw new UserError(`${origin}: the job's description cannot be read: ${(err as Error).message}`);
  }
  const r = resolveDescription(bundle.file, site, { bundle, buildable });
  if (!r.description) throw new DescriptionError(r.problems, r.warnings);
  return r.description;
}
