/** `vse gc` of configurations by age and by the site's size limit, on a cache of made-up configurations. */
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { gcConfigurations, listConfigurations } from '../../lib/configure/store.js';

let cache: string;
afterEach(() => rmSync(cache, { recursive: true, force: true }));

/** A published configuration of `mib` MiB, last used `daysAgo` days ago. */
function config(key: string, mib: number, daysAgo: number, parent?: string): void {
  const dir = join(cache, 'configs', key);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ key, base: 'minimal', parent, builtAt: '2026-01-01T00:00:00.000Z', buildMs: 1 }));
  writeFileSync(join(dir, 'disk.qcow2'), Buffer.alloc(mib * 1048576));
  writeFileSync(join(dir, '.used'), '');
  const t = new Date(Date.now() - daysAgo * 86_400_000);
  utimesSync(join(dir, '.used'), t, t);
}

const MiB = 1048576;
const keys = (): string[] => listConfigurations(cache).map((c) => c.key).sort();

describe('vse gc of configurations', () => {
  it('removes what no job used for longer than the age limit, never a base of what it keeps', () => {
    cache = mkdtempSync('/tmp/vse-unit-gc-');
    config('base', 1, 90);
    config('child', 1, 1, 'base');
    config('old', 1, 60);
    const r = gcConfigurations(cache, new Set(), 30 * 86_400_000, false);
    expect(r.removed).toEqual(['old']);
    expect(keys()).toEqual(['base', 'child']);
  });

  it('over the size limit, removes the least recently used first, keeps what jobs use and their bases', () => {
    cache = mkdtempSync('/tmp/vse-unit-gc-');
    config('base', 2, 10);
    config('used', 2, 9, 'base'); // a running job uses it
    config('a', 2, 8);
    config('b', 2, 5);
    config('c', 2, 1);
    // all are younger than the age limit; 10 MiB of disks in all, 6.5 allowed (manifests take a little too): a and b go (least recently used), not base
    const dry = gcConfigurations(cache, new Set(['used']), 30 * 86_400_000, true, 6.5 * MiB);
    expect(dry.removed.sort()).toEqual(['a', 'b']);
    expect(keys()).toEqual(['a', 'b', 'base', 'c', 'used']);
    const r = gcConfigurations(cache, new Set(['used']), 30 * 86_400_000, false, 6.5 * MiB);
    expect(r.removed.sort()).toEqual(['a', 'b']);
    expect(keys()).toEqual(['base', 'c', 'used']);
  });

  it('a base goes only after what builds on it, when neither is in use', () => {
    cache = mkdtempSync('/tmp/vse-unit-gc-');
    config('base', 2, 10);
    config('child', 2, 9, 'base');
    config('new', 2, 1);
    const r = gcConfigurations(cache, new Set(), 30 * 86_400_000, false, 2.5 * MiB);
    expect(r.removed.sort()).toEqual(['base', 'child']);
    expect(keys()).toEqual(['new']);
  });
});
