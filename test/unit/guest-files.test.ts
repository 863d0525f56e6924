/** What the minimal guest's initramfs carries of vse: static programs (no loader, no libraries), root's SSH directory. */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DROPBEAR, DROPBEARKEY, TASK_BINARY, minimalGuestEntries } from '../../lib/configure/guest-files.js';

/** The program header types of an ELF64 little-endian file (PT_INTERP = 3 names a dynamic loader). */
function programHeaderTypes(file: string): number[] {
  const b = readFileSync(file);
  expect(b.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
  const phoff = Number(b.readBigUInt64LE(0x20));
  const phentsize = b.readUInt16LE(0x36);
  const phnum = b.readUInt16LE(0x38);
  return Array.from({ length: phnum }, (_, i) => b.readUInt32LE(phoff + i * phentsize));
}

describe('the minimal guest\'s own programs', () => {
  it.each([['dropbear', DROPBEAR], ['dropbearkey', DROPBEARKEY], ['vse-task', TASK_BINARY]])('%s is static: it needs no dynamic loader in the guest', (_name, file) => {
    const types = programHeaderTypes(file);
    expect(types).toContain(1); // PT_LOAD: a program at all
    expect(types).not.toContain(3); // PT_INTERP
  });
  it('the image carries them, root\'s SSH directory made private, and no shared library', () => {
    const entries = minimalGuestEntries();
    const paths = entries.map((e) => e.path);
    expect(paths).toEqual(expect.arrayContaining(['usr/sbin/dropbear', 'usr/bin/dropbearkey', 'usr/lib/vse/vse-task', 'usr/lib/vse/setup.sh']));
    expect(entries.find((e) => e.path === 'root/.ssh')).toEqual({ path: 'root/.ssh', type: 'dir', mode: 0o700 });
    expect(paths.filter((p) => /\.so(\.|$)/.test(p))).toEqual([]);
    // a directory comes before what it holds
    expect(paths.indexOf('root')).toBeLessThan(paths.indexOf('root/.ssh'));
  });
});
