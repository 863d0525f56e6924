import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { buildCpio } from '../../lib/configure/cpio.js';

/** Read back a newc archive: name, mode, size, rdev and data of each entry. */
function readNewc(buf: Buffer): { name: string; mode: number; data: string; rdev: [number, number] }[] {
  const out = [];
  let off = 0;
  for (;;) {
    const h = buf.subarray(off, off + 110).toString('ascii');
    expect(h.slice(0, 6)).toBe('070701');
    const field = (i: number): number => parseInt(h.slice(6 + i * 8, 14 + i * 8), 16);
    const nameSize = field(11);
    const fileSize = field(6);
    const name = buf.subarray(off + 110, off + 110 + nameSize - 1).toString();
    off += 110 + nameSize;
    off += (4 - (off % 4)) % 4;
    const data = buf.subarray(off, off + fileSize).toString();
    off += fileSize;
    off += (4 - (off % 4)) % 4;
    if (name === 'TRAILER!!!') return out;
    out.push({ name, mode: field(1), data, rdev: [field(9), field(10)] as [number, number] });
  }
}

describe('the initramfs archive', () => {
  it('holds directories, files, symlinks and device nodes the kernel can unpack', () => {
    const entries = readNewc(gunzipSync(buildCpio([
      { path: 'dev', type: 'dir' },
      { path: 'dev/console', type: 'char', major: 5, minor: 1 },
      { path: 'init', type: 'file', data: Buffer.from('#!/bin/sh\necho hi\n'), mode: 0o755 },
      { path: 'bin/sh', type: 'symlink', target: 'busybox' },
    ])));
    expect(entries.map((e) => [e.name, e.mode.toString(8)])).toEqual([
      ['dev', '40755'], ['dev/console', '20600'], ['init', '100755'], ['bin/sh', '120777'],
    ]);
    expect(entries[1]?.rdev).toEqual([5, 1]);
    expect(entries[2]?.data).toBe('#!/bin/sh\necho hi\n');
    expect(entries[3]?.data).toBe('busybox');
  });
});
