/** The normalised description model and the XML vocabulary that maps onto it. */
import { parseSize } from '../util/size.js';
import type { Problem } from './problem.js';
import type { XmlAttr, XmlElement } from './xml.js';

/** Guest bases this version can build. */
export const OS_BASES = ['minimal'] as const;
export type OsBase = (typeof OS_BASES)[number];

/** A resolved description: what every later stage (create, deploy) works from. */
export interface Description {
  name: string;
  os: { base: OsBase };
  vm: { memoryMiB: number; vcpus: number; perNode: number };
}

export const DEFAULTS = { memoryMiB: 128, vcpus: 1, perNode: 1 } as const;

/** Where each model value came from: JSON pointer -> XML location. */
export type Locations = Map<string, { line: number; col: number; path: string }>;

type Kind = 'name' | 'size' | 'count' | { oneOf: readonly string[] };

interface ElementSpec {
  attrs: Record<string, { kind: Kind; required?: boolean; pointer: string }>;
  children: Record<string, { max: number }>;
}

const VOCABULARY: Record<string, ElementSpec> = {
  vse: { attrs: { name: { kind: 'name', required: true, pointer: '/name' } }, children: { os: { max: 1 }, vm: { max: 1 } } },
  os: { attrs: { base: { kind: { oneOf: OS_BASES }, required: true, pointer: '/os/base' } }, children: {} },
  vm: {
    attrs: {
      memory: { kind: 'size', pointer: '/vm/memoryMiB' },
      vcpus: { kind: 'count', pointer: '/vm/vcpus' },
      perNode: { kind: 'count', pointer: '/vm/perNode' },
    },
    children: {},
  },
};

function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) (d[0] as number[])[j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const row = d[i] as number[];
      const prev = d[i - 1] as number[];
      row[j] = Math.min((prev[j] ?? 0) + 1, (row[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
  }
  return (d[a.length] as number[])[b.length] ?? 0;
}

/** "did you mean X?" for a misspelt name, or undefined. */
export function didYouMean(name: string, known: string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const dd = distance(name.toLowerCase(), k.toLowerCase());
    if (dd < bestD) [best, bestD] = [k, dd];
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(name.length / 3)) ? `did you mean "${best}"?` : undefined;
}

function convert(kind: Kind, a: XmlAttr): { value?: string | number; expected?: string; hint?: string } {
  const v = a.value.trim();
  if (kind === 'name') {
    return /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(v)
      ? { value: v }
      : { expected: 'a name of letters, digits, ".", "_" or "-" (at most 63, starting with a letter or digit)' };
  }
  if (kind === 'size') {
    const mib = parseSize(v);
    return mib === undefined ? { expected: 'a size with a unit, such as 512M or 2G', hint: /^\d+$/.test(v) ? `write ${v}M for ${v} MiB` : undefined } : { value: mib };
  }
  if (kind === 'count') {
    return /^\d{1,6}$/.test(v) ? { value: Number(v) } : { expected: 'a whole number such as 1 or 4' };
  }
  return kind.oneOf.includes(v) ? { value: v } : { expected: `one of ${kind.oneOf.join(', ')}`, hint: didYouMean(v, [...kind.oneOf]) };
}

/** Turn a parsed XML tree into the model (with defaults) and the location of every value. */
export function normalise(file: string, root: XmlElement): { model: Record<string, unknown>; locations: Locations; problems: Problem[] } {
  const problems: Problem[] = [];
  const locations: Locations = new Map();
  const model: Record<string, unknown> = { os: {}, vm: { ...DEFAULTS } };
  const problem = (el: { line: number; col: number }, path: string, message: string, expected?: string, hint?: string): void => {
    problems.push({ file, line: el.line, col: el.col, path, message, expected, hint });
  };
  const set = (pointer: string, value: unknown): void => {
    const [, top, key] = pointer.split('/');
    if (top === undefined) return;
    if (key === undefined) model[top] = value;
    else (model[top] as Record<string, unknown>)[key] = value;
  };

  if (root.name !== 'vse') {
    problem(root, root.path, `the root element is <${root.name}>`, 'a <vse> root element', didYouMean(root.name, ['vse']));
    return { model, locations, problems };
  }
  locations.set('', root);
  const visit = (el: XmlElement, spec: ElementSpec): void => {
    for (const [name, a] of el.attrs) {
      const attrSpec = spec.attrs[name];
      const path = `${el.path}/@${name}`;
      if (!attrSpec) {
        const known = Object.keys(spec.attrs);
        problem(a, path, `unknown attribute "${name}" on <${el.name}>`, known.length ? `one of ${known.join(', ')}` : 'no attributes', didYouMean(name, known));
        continue;
      }
      const c = convert(attrSpec.kind, a);
      if (c.value === undefined) problem(a, path, `"${a.value}" is not valid`, c.expected, c.hint);
      else {
        set(attrSpec.pointer, c.value);
        locations.set(attrSpec.pointer, { line: a.line, col: a.col, path });
      }
    }
    for (const [name, attrSpec] of Object.entries(spec.attrs)) {
      if (attrSpec.required && !el.attrs.has(name)) problem(el, `${el.path}/@${name}`, `<${el.name}> has no "${name}" attribute`, `${name}="..."`);
    }
    if (el.text.trim() !== '') problem(el, el.path, `unexpected text "${el.text.trim().slice(0, 40)}" in <${el.name}>`, 'only child elements');
    const seen = new Map<string, number>();
    for (const child of el.children) {
      const childSpec = spec.children[child.name];
      const vocab = VOCABULARY[child.name];
      if (!childSpec || !vocab) {
        const known = Object.keys(spec.children);
        problem(child, child.path, `unknown element <${child.name}> in <${el.name}>`, known.length ? `one of ${known.map((k) => `<${k}>`).join(', ')}` : 'no child elements', didYouMean(child.name, known));
        continue;
      }
      const n = (seen.get(child.name) ?? 0) + 1;
      seen.set(child.name, n);
      if (n > childSpec.max) {
        problem(child, child.path, `<${child.name}> appears ${n} times`, `at most ${childSpec.max}`, 'merge the attributes into one element');
        continue;
      }
      locations.set(`/${child.name}`, child);
      visit(child, vocab);
    }
  };
  visit(root, VOCABULARY.vse as ElementSpec);
  if (!root.children.some((c) => c.name === 'os')) problem(root, '/vse/os', 'no <os> element', '<os base="minimal"/>', 'every description names the guest it boots');
  return { model, locations, problems };
}
