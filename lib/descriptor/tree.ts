/**
 * One layer as a tree: the XML checked against the vocabulary, values normalised (sizes in MiB,
 * paths made canonical), every value tagged with where it came from, directives kept apart.
 */
import { posix } from 'node:path';
import { parseSize } from '../util/size.js';
import type { Problem } from './problem.js';
import { type AttrKind, CONTAINERS, DIRECTIVES, type ElementSpec, type ListSpec, VOCABULARY } from './vocabulary.js';
import type { XmlAttr, XmlElement } from './xml.js';

export interface Origin {
  file: string;
  line: number;
  col: number;
  /** 0 for the deepest base, counting up to the user's own file. */
  layer: number;
  admin: boolean;
}

export interface Value {
  /** Canonical form (sizes in MiB, normalised paths). */
  value: string;
  /** As written. */
  raw: string;
  origin: Origin;
  /** Earlier values this one replaced, newest first. */
  overrode: { raw: string; origin: Origin }[];
}

/** Where an item was removed (`action="remove"`), and by which element. */
export type Removal = Origin & { el: string };

export interface Directives {
  action?: 'remove';
  replace?: boolean;
  /** true: the whole element; a list: these attributes. */
  locked?: true | string[];
  before?: string;
  after?: string;
}

export interface List {
  slot: string;
  items: Map<string, Node>;
  origin?: Origin;
  directives: Directives;
  /** Keys removed by a layer, where, and the element that removed them. */
  removed: Map<string, Removal>;
}

export interface Node {
  el: string;
  origin: Origin;
  attrs: Map<string, Value>;
  text?: Value;
  singles: Map<string, Node>;
  lists: Map<string, List>;
  directives: Directives;
}

export function emptyList(slot: string): List {
  return { slot, items: new Map(), directives: {}, removed: new Map() };
}

function distance(a: string, b: string): number {
  const prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diag = prev[0] as number;
    prev[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const up = prev[j] as number;
      prev[j] = Math.min(up + 1, (prev[j - 1] as number) + 1, diag + (a[i - 1] === b[j - 1] ? 0 : 1));
      diag = up;
    }
  }
  return prev[b.length] as number;
}

/** `did you mean "x"?` for a misspelt name, or undefined. */
export function didYouMean(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const k of known) {
    const d = distance(name.toLowerCase(), k.toLowerCase());
    if (d < bestD) [best, bestD] = [k, d];
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(name.length / 3)) ? `did you mean "${best}"?` : undefined;
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** Check one attribute value of a kind; the canonical value, or what was expected. */
export function convertValue(kind: AttrKind, raw: string): { value?: string; expected?: string; hint?: string } {
  const v = raw.trim();
  if (/[\0\n\r]/.test(raw)) return { expected: 'a single line of text' };
  switch (kind) {
    case 'name':
      return NAME.test(v) ? { value: v } : { expected: 'a name of letters, digits, ".", "_" or "-" (at most 63, starting with a letter or digit)' };
    case 'debname':
      if (/^[a-z0-9][a-z0-9+.-]+$/.test(v)) return { value: v };
      return { expected: 'a Debian package name (lower case letters, digits, "+", "-", ".")', hint: v !== v.toLowerCase() ? `package names are lower case: "${v.toLowerCase()}"` : undefined };
    case 'size': {
      const mib = parseSize(v);
      if (mib === undefined) return { expected: 'a size with a unit, such as 512M or 2G', hint: /^\d+$/.test(v) ? `write ${v}M for ${v} MiB` : undefined };
      return mib > 0 ? { value: String(mib) } : { expected: 'a size of at least 1M' };
    }
    case 'count':
      return /^\d{1,6}$/.test(v) ? { value: String(Number(v)) } : { expected: 'a whole number such as 1 or 4' };
    case 'guestpath': {
      if (!v.startsWith('/')) return { expected: 'an absolute path in the guest, such as /opt/app', hint: v ? `write "/${v}"` : undefined };
      const n = posix.normalize(v);
      return { value: n.length > 1 ? n.replace(/\/+$/, '') : n };
    }
    case 'hostpath':
      return v === '' ? { expected: 'a host path' } : { value: v };
    case 'text':
      return { value: raw };
    case 'envname':
      return /^[A-Za-z_][A-Za-z0-9_]*$/.test(v) ? { value: v } : { expected: 'a variable name (letters, digits, "_", not starting with a digit)' };
    case 'bootname':
      return /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(v) ? { value: v } : { expected: 'a kernel parameter name (letters, digits, ".", "_", "-")' };
    case 'bootvalue':
      return /^[^\s"]*$/.test(v) ? { value: v } : { expected: 'a value without spaces or quotes' };
    case 'regex':
      try {
        new RegExp(v);
        return { value: v };
      } catch (err) {
        return { expected: 'a valid regular expression', hint: (err as Error).message };
      }
    case 'mode': {
      const n = /^[0-7]{3,5}$/.test(v) ? parseInt(v, 8) : NaN;
      return n <= 0o7777 ? { value: n.toString(8).padStart(4, '0') } : { expected: 'an octal file mode such as 0644 (at most 07777)' };
    }
    case 'bool':
      return v === 'true' || v === 'false' ? { value: v } : { expected: 'true or false' };
    default:
      return kind.oneOf.includes(v) ? { value: v } : { expected: `one of ${kind.oneOf.join(', ')}`, hint: didYouMean(v, kind.oneOf) };
  }
}

/** The list slot of `parent` that an element name belongs to, directly or as container. */
function slotOf(spec: ElementSpec, child: string): { slot: string; list: ListSpec; viaContainer: boolean } | undefined {
  for (const [slot, list] of Object.entries(spec.lists ?? {})) {
    if (list.container === child) return { slot, list, viaContainer: true };
    if (!list.container && list.items.includes(child)) return { slot, list, viaContainer: false };
  }
  return undefined;
}

/** Names that may appear as children of an element (for messages). */
function childNames(spec: ElementSpec): string[] {
  return [...(spec.singles ?? []), ...Object.values(spec.lists ?? {}).flatMap((l) => (l.container ? [l.container] : l.items))];
}

export interface LayerOptions {
  file: string;
  layer: number;
  admin: boolean;
  problems: Problem[];
}

/** Build one layer's tree from its XML root; problems are collected, not thrown. */
export function buildLayer(root: XmlElement, o: LayerOptions): { node?: Node; extendsRef?: Value } {
  const origin = (at: { line: number; col: number }): Origin => ({ file: o.file, line: at.line, col: at.col, layer: o.layer, admin: o.admin });
  const problem = (at: { line: number; col: number }, path: string, message: string, expected?: string, hint?: string): void => {
    o.problems.push({ file: o.file, line: at.line, col: at.col, path, message, expected, hint });
  };
  if (root.name !== 'vse') {
    problem(root, root.path, `the root element is <${root.name}>`, 'a <vse> root element', didYouMean(root.name, ['vse']));
    return {};
  }

  const directives = (el: XmlElement, path: string, allowed: (keyof typeof DIRECTIVES)[], spec?: ElementSpec): Directives => {
    const d: Directives = {};
    for (const name of allowed) {
      const a = el.attrs.get(name);
      if (!a) continue;
      const v = a.value.trim();
      const at = `${path}/@${name}`;
      if (name === 'action') {
        if (v === 'remove') d.action = 'remove';
        else problem(a, at, `"${a.value}" is not valid`, 'remove', 'items are added or overridden by default; action="remove" deletes an inherited one');
      } else if (name === 'replace') {
        if (v === 'true') d.replace = true;
        else if (v !== 'false') problem(a, at, `"${a.value}" is not valid`, 'true or false');
      } else if (name === 'locked') {
        if (v === 'true') d.locked = true;
        else if (v !== 'false') {
          const names = v.split(/\s+/).filter(Boolean);
          const bad = names.filter((n) => !spec || !Object.hasOwn(spec.attrs, n));
          if (bad.length > 0 || names.length === 0) {
            const known = Object.keys(spec?.attrs ?? {});
            problem(a, at, `"${a.value}" is not valid`, `true, or attribute names of <${el.name}> (${known.join(', ') || 'none'})`, bad[0] ? didYouMean(bad[0], known) : undefined);
          } else d.locked = names;
        }
      } else if (name === 'before' || name === 'after') {
        d[name] = v;
      }
    }
    if (d.before !== undefined && d.after !== undefined) problem(el, path, `<${el.name}> has both "before" and "after"`, 'at most one of them');
    return d;
  };

  const buildElement = (el: XmlElement, spec: ElementSpec, path: string, allowedDirectives: (keyof typeof DIRECTIVES)[]): Node => {
    const node: Node = { el: el.name, origin: origin(el), attrs: new Map(), singles: new Map(), lists: new Map(), directives: directives(el, path, allowedDirectives, spec) };
    for (const [name, a] of el.attrs) {
      if ((allowedDirectives as string[]).includes(name)) continue;
      const attrSpec = Object.hasOwn(spec.attrs, name) ? spec.attrs[name] : undefined;
      if (!attrSpec) {
        const known = [...Object.keys(spec.attrs), ...allowedDirectives];
        problem(a, `${path}/@${name}`, `unknown attribute "${name}" on <${el.name}>`, known.length ? `one of ${known.join(', ')}` : 'no attributes', didYouMean(name, known));
        continue;
      }
      const c = convertValue(attrSpec.kind, a.value);
      if (c.value === undefined) problem(a, `${path}/@${name}`, `"${a.value}" is not valid`, c.expected, c.hint);
      else node.attrs.set(name, { value: c.value, raw: a.value, origin: origin(a), overrode: [] });
    }
    if (node.directives.action !== 'remove') {
      for (const [name, attrSpec] of Object.entries(spec.attrs)) {
        if (attrSpec.required && !el.attrs.has(name)) problem(el, `${path}/@${name}`, `<${el.name}> has no "${name}" attribute`, `${name}="..."`, attrSpec.doc);
      }
    }
    const text = el.text.trim();
    if (spec.text) {
      if (text !== '') node.text = { value: text, raw: text, origin: origin(el), overrode: [] };
      else if (spec.text === 'required' && node.directives.action !== 'remove') problem(el, path, `<${el.name}> is empty`, 'its text content', spec.attrs.name ? 'the command to run goes between the tags' : undefined);
    } else if (text !== '') {
      problem(el, path, `unexpected text "${text.slice(0, 40)}" in <${el.name}>`, 'only child elements');
    }
    for (const child of el.children) addChild(node, spec, child, path);
    return node;
  };

  const itemKey = (item: XmlElement, list: ListSpec, index: number): string | undefined => {
    if (!list.key) return `#${index + 1}`;
    const a = item.attrs.get(list.key);
    const itemSpec = VOCABULARY[item.name];
    const kind = itemSpec?.attrs[list.key]?.kind ?? 'text';
    if (!a) return undefined; // reported as a missing required attribute
    return convertValue(kind, a.value).value;
  };

  const addItems = (parent: Node, slot: string, list: ListSpec, items: XmlElement[], listPath: string, container?: XmlElement): void => {
    let target = parent.lists.get(slot);
    if (!target) {
      target = emptyList(slot);
      parent.lists.set(slot, target);
    }
    if (container) {
      target.origin = origin(container);
      target.directives = directives(container, listPath, ['replace', 'locked']);
      for (const [name, a] of container.attrs) {
        if (name !== 'replace' && name !== 'locked') problem(a, `${listPath}/@${name}`, `unknown attribute "${name}" on <${container.name}>`, 'replace or locked', didYouMean(name, ['replace', 'locked']));
      }
      if (container.text.trim() !== '') problem(container, listPath, `unexpected text in <${container.name}>`, 'only child elements');
    }
    items.forEach((item) => {
      const i = target.items.size + target.removed.size;
      const itemSpec = VOCABULARY[item.name];
      if (!itemSpec || !list.items.includes(item.name)) {
        problem(item, `${listPath}/${item.name}`, `unknown element <${item.name}> in <${container?.name ?? parent.el}>`, `one of ${list.items.map((n) => `<${n}>`).join(', ')}`, didYouMean(item.name, list.items));
        return;
      }
      const key = itemKey(item, list, i);
      const itemPath = list.key ? `${listPath}/${item.name}[${key ?? '?'}]` : `${listPath}/${item.name}[${i + 1}]`;
      const allowed: (keyof typeof DIRECTIVES)[] = list.key ? ['action', 'replace', 'locked', ...(list.ordered ? (['before', 'after'] as const) : [])] : [];
      const node = buildElement(item, itemSpec, itemPath, allowed);
      if (key === undefined) return;
      if (target.items.has(key) || target.removed.has(key)) {
        problem(item, itemPath, `${list.key} "${key}" appears twice in this file`, `each ${list.key} once per layer`, 'merge the two elements into one');
        return;
      }
      if (node.directives.action === 'remove') target.removed.set(key, { ...origin(item), el: item.name });
      else target.items.set(key, node);
    });
  };

  const addChild = (node: Node, spec: ElementSpec, child: XmlElement, parentPath: string): void => {
    const childSpec = VOCABULARY[child.name];
    if (spec.singles?.includes(child.name) && childSpec) {
      const path = `${parentPath}/${child.name}`;
      if (node.singles.has(child.name)) {
        problem(child, path, `<${child.name}> appears twice`, 'at most once', 'merge the attributes into one element');
        return;
      }
      node.singles.set(child.name, buildElement(child, childSpec, path, ['replace', 'locked']));
      return;
    }
    const s = slotOf(spec, child.name);
    if (s?.viaContainer) {
      const path = `${parentPath}/${child.name}`;
      if (node.lists.get(s.slot)?.origin) {
        problem(child, path, `<${child.name}> appears twice`, 'at most once', 'put all items in one element');
        return;
      }
      addItems(node, s.slot, s.list, child.children, path, child);
      return;
    }
    if (s) {
      addItems(node, s.slot, s.list, [child], parentPath);
      return;
    }
    const known = childNames(spec);
    const inContainer = CONTAINERS[child.name] === undefined ? Object.entries(CONTAINERS).find(([c]) => VOCABULARY[CONTAINERS[c]!.parent]?.lists?.[CONTAINERS[c]!.slot]?.items.includes(child.name)) : undefined;
    problem(child, `${parentPath}/${child.name}`, `unknown element <${child.name}> in <${node.el}>`, known.length ? `one of ${known.map((k) => `<${k}>`).join(', ')}` : 'no child elements',
      inContainer ? `<${child.name}> goes inside <${inContainer[0]}>` : didYouMean(child.name, known));
  };

  const node = buildElement(root, VOCABULARY.vse as ElementSpec, '/vse', []);
  const ext = root.attrs.get('extends') as XmlAttr | undefined;
  node.attrs.delete('extends');
  return { node, extendsRef: ext ? { value: ext.value.trim(), raw: ext.value, origin: origin(ext), overrode: [] } : undefined };
}
