/** A minimal `newc` cpio writer: builds an initramfs without root (device nodes included). */
import { gzipSync } from 'node:zlib';

export type CpioEntry =
  | { path: string; type: 'dir'; mode?: number }
  | { path: string; type: 'file'; data: Buffer; mode?: number }
  | { path: string; type: 'symlink'; target: string }
  | { path: string; type: 'char'; major: number; minor: number; mode?: number };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;

function hex8(n: number): string {
  return (n >>> 0).toString(16).padStart(8, '0');
}

function pad4(len: number): Buffer {
  return Buffer.alloc((4 - (len % 4)) % 4);
}

function record(ino: number, name: string, mode: number, data: Buffer, rdevMajor = 0, rdevMinor = 0): Buffer[] {
  const nameBuf = Buffer.from(`${name}\0`, 'utf8');
  const header =
    '070701' +
    [ino, mode, 0, 0, 1, 0, data.length, 0, 0, rdevMajor, rdevMinor, nameBuf.length, 0].map(hex8).join('');
  const head = Buffer.concat([Buffer.from(header, 'ascii'), nameBuf]);
  return [head, pad4(head.length), data, pad4(data.length)];
}

/** A gzip-compressed newc archive of the entries, in the given order (parents before children). */
export function buildCpio(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let ino = 1;
  for (const e of entries) {
    const name = e.path.replace(/^\/+/, '');
    if (e.type === 'dir') parts.push(...record(ino++, name, S_IFDIR | (e.mode ?? 0o755), Buffer.alloc(0)));
    else if (e.type === 'file') parts.push(...record(ino++, name, S_IFREG | (e.mode ?? 0o644), e.data));
    else if (e.type === 'symlink') parts.push(...record(ino++, name, S_IFLNK | 0o777, Buffer.from(e.target)));
    else parts.push(...record(ino++, name, S_IFCHR | (e.mode ?? 0o600), Buffer.alloc(0), e.major, e.minor));
  }
  parts.push(...record(0, 'TRAILER!!!', 0, Buffer.alloc(0)));
  return gzipSync(Buffer.concat(parts), { level: 6 });
}
