/** `vse resolve --explain`: every value of the merged description, the layer that set it, and what it overrode. */
import type { List, Node, Origin } from './tree.js';
import { VOCABULARY } from './vocabulary.js';

export interface ExplainEntry {
  path: string;
  value: string | null;
  set: Origin;
  overrode: { value: string; at: Origin }[];
  removed?: boolean;
}

/** Walk the merged tree in document order. */
export function explain(root: Node): ExplainEntry[] {
  const out: ExplainEntry[] = [];
  const node = (n: Node, path: string): void => {
    for (const [k, v] of n.attrs) out.push({ path: `${path}/@${k}`, value: v.raw, set: v.origin, overrode: v.overrode.map((o) => ({ value: o.raw, at: o.origin })) });
    if (n.text) out.push({ path: `${path}/text()`, value: n.text.raw, set: n.text.origin, overrode: n.text.overrode.map((o) => ({ value: o.raw, at: o.origin })) });
    for (const [name, c] of n.singles) node(c, `${path}/${name}`);
    for (const [slot, l] of n.lists) list(l, n.el, path, slot);
  };
  // the same element paths as in error messages: /vse/boot/option[quiet], /vse/rte[mpi], .../append[1]
  const list = (l: List, parentEl: string, parentPath: string, slot: string): void => {
    const spec = VOCABULARY[parentEl]?.lists?.[slot];
    const base = spec?.container ? `${parentPath}/${spec.container}` : parentPath;
    const at = (el: string, key: string): string => `${base}/${el}[${key.startsWith('#') ? key.slice(1) : key}]`;
    for (const [key, item] of l.items) node(item, at(item.el, key));
    for (const [key, o] of l.removed) out.push({ path: at(o.el, key), value: null, set: o, overrode: [], removed: true });
  };
  node(root, '/vse');
  return out;
}

const at = (o: Origin): string => `${o.file}:${o.line}:${o.col}${o.admin ? ' (admin)' : ''}`;

/** One line per value, aligned; overridden values indented below. */
export function formatExplain(entries: ExplainEntry[]): string {
  const width = Math.min(60, Math.max(...entries.map((e) => e.path.length + (e.value?.length ?? 7) + 3)));
  const lines: string[] = [];
  for (const e of entries) {
    const head = e.removed ? `${e.path} removed` : `${e.path} = ${JSON.stringify(e.value)}`;
    lines.push(`${head.padEnd(width)}  ${at(e.set)}`);
    for (const o of e.overrode) lines.push(`${''.padEnd(width)}    overrides ${JSON.stringify(o.value)} from ${at(o.at)}`);
  }
  return lines.join('\n');
}
