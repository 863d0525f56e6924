/**
 * Admin locks, checked on the fully merged result: a locked element, list or attribute must end
 * exactly as the admin layer left it, whatever the later layers did (override, remove, replace,
 * re-add under another key, a deeper `extends`).
 */
import { realpathSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import type { Problem } from './problem.js';
import type { List, Node, Origin, Value } from './tree.js';

type Step = { single: string } | { slot: string } | { slot: string; key: string; el: string };

export interface Lock {
  steps: Step[];
  path: string;
  /** true: everything below; else these attributes. */
  what: true | string[];
  origin: Origin;
  /** Canonical content when the (last) admin layer was applied. */
  snapshot: string;
  /** Index of the admin layer the snapshot is from. */
  layer: number;
  /** Set for keyed items: what the item was, for the alias checks. */
  item?: { el: string; key: string; slot: string; attrs: Record<string, string> };
}

function pathOf(steps: Step[]): string {
  // element paths as in messages elsewhere: containers by name (<packages>), direct lists by item
  return '/vse' + steps.map((s) => {
    if ('single' in s) return `/${s.single}`;
    if (!('key' in s)) return `/${s.slot}`;
    return `${s.slot === s.el ? '' : `/${s.slot}`}/${s.el}[${s.key}]`;
  }).join('');
}

function resolveSteps(root: Node | undefined, steps: Step[]): Node | List | undefined {
  let cur: Node | List | undefined = root;
  for (const s of steps) {
    if (!cur) return undefined;
    const node: Node | undefined = 'attrs' in cur ? cur : undefined;
    if ('single' in s) cur = node?.singles.get(s.single);
    else if ('key' in s) cur = node?.lists.get(s.slot)?.items.get(s.key);
    else cur = node?.lists.get(s.slot);
  }
  return cur;
}

function canonical(x: Node | List | undefined, attrs?: string[]): string {
  if (!x) return 'null';
  if ('items' in x) return JSON.stringify([...x.items].map(([k, v]) => [k, canonical(v)]));
  if (attrs) return JSON.stringify(attrs.map((a) => x.attrs.get(a)?.value ?? null));
  return JSON.stringify({
    el: x.el,
    a: [...x.attrs].map(([k, v]) => [k, v.value]).sort(),
    t: x.text?.value ?? null,
    s: [...x.singles].map(([k, v]) => [k, canonical(v)]).sort(),
    l: [...x.lists].map(([k, v]) => [k, canonical(v)]).sort(),
  });
}

/** Every `locked` directive in a layer tree, with its steps. */
function lockedIn(layer: Node): { steps: Step[]; what: true | string[]; origin: Origin }[] {
  const out: { steps: Step[]; what: true | string[]; origin: Origin }[] = [];
  const walk = (n: Node, steps: Step[]): void => {
    if (n.directives.locked && steps.length > 0) out.push({ steps, what: n.directives.locked, origin: n.origin });
    for (const [name, c] of n.singles) walk(c, [...steps, { single: name }]);
    for (const [slot, l] of n.lists) {
      if (l.directives.locked && l.origin) out.push({ steps: [...steps, { slot }], what: true, origin: l.origin });
      for (const [key, item] of l.items) walk(item, [...steps, { slot, key, el: item.el }]);
    }
  };
  walk(layer, []);
  return out;
}

export class LockBook {
  readonly locks: Lock[] = [];

  /** After an admin layer was merged: take its new locks, and refresh all snapshots (admins may change admins' values). */
  afterAdminLayer(merged: Node, layer: Node, index: number): void {
    for (const l of lockedIn(layer)) {
      const at = this.locks.findIndex((x) => pathOf(x.steps) === pathOf(l.steps));
      const lock: Lock = { ...l, path: pathOf(l.steps), snapshot: '', layer: index };
      if (at >= 0) this.locks[at] = lock;
      else this.locks.push(lock);
    }
    for (const lock of this.locks) {
      const target = resolveSteps(merged, lock.steps);
      lock.snapshot = canonical(target, lock.what === true ? undefined : lock.what);
      lock.layer = index;
      const last = lock.steps.at(-1);
      if (target && 'attrs' in target && last && 'key' in last) {
        lock.item = { el: target.el, key: last.key, slot: last.slot, attrs: Object.fromEntries([...target.attrs].map(([k, v]) => [k, v.value])) };
      }
    }
  }

  /** `locked` in a layer that is not an admin layer: it has no effect; say so once. */
  static ignoredLocks(layer: Node): Origin | undefined {
    return lockedIn(layer)[0]?.origin;
  }

  /** Every lock the merged result breaks. */
  check(merged: Node): Problem[] {
    const problems: Problem[] = [];
    for (const lock of this.locks) {
      const target = resolveSteps(merged, lock.steps);
      const now = canonical(target, lock.what === true ? undefined : lock.what);
      if (now === lock.snapshot) continue;
      const culprit = target ? newestChange(target, lock.layer, lock.what) : removalOf(merged, lock.steps, lock.layer);
      const o = culprit ?? lock.origin;
      const attr = lock.what !== true && lock.what.length === 1 ? `/@${lock.what[0]}` : '';
      problems.push({
        file: o.file, line: o.line, col: o.col, path: `${lock.path}${attr}`,
        message: target ? `${lock.what === true ? 'locked' : `attribute${lock.what.length > 1 ? 's' : ''} ${lock.what.join(', ')} locked`} by the site administrator (${lock.origin.file}:${lock.origin.line}); it cannot be changed` : `locked by the site administrator (${lock.origin.file}:${lock.origin.line}); it cannot be removed or replaced`,
        expected: target && lock.what !== true ? `${lock.what.join(', ')} as set by the site` : 'the locked value unchanged',
        hint: 'remove this change from your description, or ask the site administrators',
      });
    }
    problems.push(...aliasProblems(merged, this.locks));
    return problems;
  }
}

/** The origin of the newest value below `n` set after the lock's layer. */
function newestChange(n: Node | List, after: number, what: true | string[]): Origin | undefined {
  let best: Origin | undefined;
  const see = (o: Origin | undefined): void => {
    if (o && o.layer > after && (!best || o.layer > best.layer)) best = o;
  };
  const walk = (x: Node | List): void => {
    if ('items' in x) {
      for (const o of x.removed.values()) see(o);
      for (const item of x.items.values()) {
        see(item.origin);
        walk(item);
      }
      return;
    }
    for (const [k, v] of x.attrs) if (what === true || what.includes(k)) see(v.origin);
    if (what !== true) return;
    see(x.text?.origin);
    for (const c of x.singles.values()) walk(c);
    for (const l of x.lists.values()) walk(l);
  };
  walk(n);
  // a replaced element or list carries the replacing layer's origin even where no value changed
  if (!best && n.origin && n.origin.layer > after) best = n.origin;
  return best;
}

/** Who made a locked element disappear: its removal, else the nearest replacing ancestor. */
function removalOf(root: Node, steps: Step[], after: number): Origin | undefined {
  const last = steps.at(-1);
  if (last && 'key' in last) {
    const list = resolveSteps(root, [...steps.slice(0, -1), { slot: last.slot }]);
    const o = list && 'items' in list ? (list as List).removed.get(last.key) : undefined;
    if (o && o.layer > after) return o;
    if (list?.origin && list.origin.layer > after) return list.origin; // the list was replaced
  }
  for (let n = steps.length - 1; n >= 0; n--) {
    const anc = resolveSteps(root, steps.slice(0, n));
    const o = anc?.origin;
    if (o && o.layer > after) return o;
  }
  return undefined;
}

/** A host path as the kernel will see it: absolute (relative to its file), symlinks resolved. */
function hostKey(v: Value): string {
  const abs = isAbsolute(v.value) ? resolve(v.value) : resolve(dirname(v.origin.file), v.value);
  try {
    return realpathSync(abs);
  } catch {
    return abs;
  }
}

const within = (a: string, b: string): boolean => a === b || b === '/' || a.startsWith(`${b}/`);
const overlaps = (a: string, b: string): boolean => within(a, b) || within(b, a);

/**
 * The same thing under another key: a file operation on a parent or child of a locked path, a
 * second mount of a locked mount's host or guest path, a runtime environment installing a package
 * the site locked absent (or removing one it locked present).
 */
function aliasProblems(merged: Node, locks: Lock[]): Problem[] {
  const out: Problem[] = [];
  const files = merged.lists.get('files');
  const mounts = merged.singles.get('resources')?.lists.get('mount');
  const push = (o: Origin, path: string, message: string, lock: Lock): void => {
    out.push({ file: o.file, line: o.line, col: o.col, path, message: `${message} (locked by the site administrator at ${lock.origin.file}:${lock.origin.line})`, expected: 'no change to what the site locked', hint: 'remove this element, or ask the site administrators' });
  };
  const lockedItems = (slot: string, list: List | undefined): { lock: Lock; key: string; attrs: Record<string, string> }[] => {
    const res: { lock: Lock; key: string; attrs: Record<string, string> }[] = [];
    for (const lock of locks) {
      if (lock.item?.slot === slot && lock.what === true) res.push({ lock, key: lock.item.key, attrs: lock.item.attrs });
      const last = lock.steps.at(-1);
      if (last && 'slot' in last && !('key' in last) && last.slot === slot && list) {
        // a locked list: each of its items as the admin left it
        for (const [key, item] of list.items) if (item.origin.layer <= lock.layer) res.push({ lock, key, attrs: Object.fromEntries([...item.attrs].map(([k, v]) => [k, v.value])) });
      }
    }
    return res;
  };
  for (const { lock, key } of lockedItems('files', files)) {
    for (const [k, item] of files?.items ?? []) {
      if (k !== key && item.origin.layer > lock.layer && overlaps(k, key)) push(item.origin, `/vse/files/${item.el}[${k}]`, `<${item.el}> of ${k} would change the locked ${key}`, lock);
    }
  }
  for (const { lock, key } of lockedItems('mount', mounts)) {
    const locked = mounts?.items.get(key)?.attrs.get('host');
    const lockedHost = locked ? hostKey(locked) : undefined;
    for (const [k, item] of mounts?.items ?? []) {
      if (k === key || item.origin.layer <= lock.layer) continue;
      const host = item.attrs.get('host');
      if (overlaps(k, key)) push(item.origin, `/vse/resources/mount[${k}]`, `mount at ${k} overlaps the locked mount at ${key}`, lock);
      else if (host && lockedHost && overlaps(hostKey(host), lockedHost)) push(host.origin, `/vse/resources/mount[${k}]/@host`, `mount of ${host.raw} overlaps the locked mount of ${lockedHost}`, lock);
    }
  }
  const pkgs = merged.singles.get('os')?.lists.get('packages');
  for (const { lock, key, attrs } of lockedItems('packages', pkgs)) {
    const want = attrs.state ?? 'present';
    for (const [rteName, rte] of merged.lists.get('rte')?.items ?? []) {
      const p = rte.lists.get('package')?.items.get(key);
      if (p && (p.attrs.get('state')?.value ?? 'present') !== want) push(p.origin, `/vse/rte[${rteName}]/package[${key}]`, `runtime environment "${rteName}" makes package ${key} ${p.attrs.get('state')?.value ?? 'present'}, the site locked it ${want}`, lock);
    }
  }
  return out;
}
