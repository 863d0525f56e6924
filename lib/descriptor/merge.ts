/**
 * Merging layers, base first: attributes override one by one, list items are added, overridden
 * (same key) or removed (`action="remove"`), `replace="true"` swaps a whole element or list, and
 * ordered lists keep inherited order (`before`/`after` move an item).
 */
import type { Problem } from './problem.js';
import { type List, type Node, type Removal, type Value } from './tree.js';
import { VOCABULARY } from './vocabulary.js';

export interface MergeNote {
  /** Problems a layer's directives cause (nothing to remove, no item to place before). */
  problems: Problem[];
}

function cloneValue(v: Value): Value {
  return { ...v, overrode: [...v.overrode] };
}

/** A deep copy of a layer node, directives dropped (they act once, when the layer is applied). */
export function cloneNode(n: Node): Node {
  return {
    el: n.el,
    origin: n.origin,
    attrs: new Map([...n.attrs].map(([k, v]) => [k, cloneValue(v)])),
    text: n.text ? cloneValue(n.text) : undefined,
    singles: new Map([...n.singles].map(([k, v]) => [k, cloneNode(v)])),
    lists: new Map([...n.lists].map(([k, l]) => [k, cloneList(l)])),
    directives: {},
  };
}

function cloneList(l: List): List {
  return { slot: l.slot, items: new Map([...l.items].map(([k, v]) => [k, cloneNode(v)])), origin: l.origin, directives: {}, removed: new Map(l.removed) };
}

function override(base: Value | undefined, next: Value): Value {
  if (!base) return cloneValue(next);
  return { ...next, overrode: [{ raw: base.raw, origin: base.origin }, ...base.overrode] };
}

/** Element path of a list's items' parent: the container (`/vse/boot`) or the element itself (`/vse` for rte). */
function listPath(parentEl: string, path: string, slot: string): string {
  const c = VOCABULARY[parentEl]?.lists?.[slot]?.container;
  return c ? `${path}/${c}` : path;
}

/** Apply one layer's node onto the merged node so far. */
export function mergeNode(base: Node | undefined, layer: Node, path: string, note: MergeNote): Node {
  if (!base || layer.directives.replace) {
    // a first or replacing layer: its own content only, built by the same rules (removals, order)
    const fresh: Node = { el: layer.el, origin: layer.origin, attrs: new Map(), text: layer.text ? cloneValue(layer.text) : undefined, singles: new Map(), lists: new Map(), directives: {} };
    for (const [k, v] of layer.attrs) fresh.attrs.set(k, override(base?.attrs.get(k), v));
    for (const [name, child] of layer.singles) fresh.singles.set(name, mergeNode(undefined, child, `${path}/${name}`, note));
    for (const [slot, l] of layer.lists) fresh.lists.set(slot, mergeList(undefined, l, layer.el, listPath(layer.el, path, slot), note));
    return fresh;
  }
  const out = cloneNode(base);
  out.origin = layer.origin;
  for (const [k, v] of layer.attrs) out.attrs.set(k, override(out.attrs.get(k), v));
  if (layer.text) out.text = override(out.text, layer.text);
  for (const [name, child] of layer.singles) out.singles.set(name, mergeNode(out.singles.get(name), child, `${path}/${name}`, note));
  for (const [slot, l] of layer.lists) out.lists.set(slot, mergeList(out.lists.get(slot), l, out.el, listPath(out.el, path, slot), note));
  return out;
}

function nothingToRemove(o: Removal, listPath: string, key: string): Problem {
  return { file: o.file, line: o.line, col: o.col, path: `${listPath}/${o.el}[${key}]`, message: `nothing named "${key}" to remove`, expected: 'an item inherited from a base description', hint: 'check the spelling, or drop the element' };
}

function mergeList(base: List | undefined, layer: List, parentEl: string, path: string, note: MergeNote): List {
  const spec = VOCABULARY[parentEl]?.lists?.[layer.slot];
  if (!spec?.key) {
    // a sequence (edit operations): a layer that gives one replaces it
    return cloneList(layer);
  }
  // a first or replacing layer starts from nothing: its removals have nothing to act on, and its
  // before/after place items among its own
  const fresh = !base || layer.directives.replace === true;
  const entries = fresh ? [] : [...base.items].map(([k, v]) => [k, cloneNode(v)] as [string, Node]);
  const removed = fresh ? new Map<string, Removal>() : new Map(base.removed);
  for (const [key, o] of layer.removed) {
    const i = entries.findIndex(([k]) => k === key);
    if (i < 0) note.problems.push(nothingToRemove(o, path, key));
    else {
      entries.splice(i, 1);
      removed.set(key, o);
    }
  }
  for (const [key, item] of layer.items) {
    const i = entries.findIndex(([k]) => k === key);
    const prev = i >= 0 ? entries[i]?.[1] : undefined;
    const merged = prev && prev.el === item.el ? mergeNode(prev, item, `${path}/${item.el}[${key}]`, note) : cloneNode(item);
    if (prev && prev.el !== item.el) {
      for (const [k, v] of merged.attrs) merged.attrs.set(k, override(prev.attrs.get(k), v));
    }
    removed.delete(key);
    const anchor = item.directives.before ?? item.directives.after;
    if (i >= 0) entries.splice(i, 1);
    if (anchor !== undefined) {
      const j = entries.findIndex(([k]) => k === anchor);
      if (j < 0) {
        const o = item.origin;
        note.problems.push({ file: o.file, line: o.line, col: o.col, path: `${path}/${item.el}[${key}]`, message: `no item "${anchor}" to place it ${item.directives.before !== undefined ? 'before' : 'after'}`, expected: `one of ${entries.map(([k]) => k).join(', ') || '(the list is empty)'}` });
        entries.splice(i >= 0 ? i : entries.length, 0, [key, merged]);
      } else entries.splice(item.directives.before !== undefined ? j : j + 1, 0, [key, merged]);
    } else entries.splice(i >= 0 ? i : entries.length, 0, [key, merged]);
  }
  return { slot: layer.slot, items: new Map(entries), origin: layer.origin ?? base?.origin, directives: {}, removed };
}

/** Merge all layers (base first) into one tree. */
export function mergeLayers(layers: Node[], note: MergeNote, onLayer?: (merged: Node, layer: Node, index: number) => void): Node | undefined {
  let merged: Node | undefined;
  layers.forEach((layer, i) => {
    merged = mergeNode(merged, layer, '/vse', note);
    onLayer?.(merged, layer, i);
  });
  return merged;
}

