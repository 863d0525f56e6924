/** A minimal `newc` cpio writer: builds an initramfs without root (device nodes included). */
import { closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, readFileSync, readdirSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';

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

/** Read a (gzip-compressed) newc archive back into entries. */
export function readCpio(archive: Buffer): CpioEntry[] {
  const buf = archive[0] === 0x1f && archive[1] === 0x8b ? gunzipSync(archive) : archive;
  const out: CpioEntry[] = [];
  let off = 0;
  for (;;) {
    const h = buf.subarray(off, off + 110).toString('ascii');
    if (!h.startsWith('070701')) throw new Error(`not a newc cpio archive at offset ${off}`);
    const field = (i: number): number => parseInt(h.slice(6 + i * 8, 14 + i * 8), 16);
    const mode = field(1);
    const size = field(6);
    const nameSize = field(11);
    const name = buf.subarray(off + 110, off + 110 + nameSize - 1).toString();
    off += 110 + nameSize;
    off += (4 - (off % 4)) % 4;
    const data = Buffer.from(buf.subarray(off, off + size));
    off += size;
    off += (4 - (off % 4)) % 4;
    if (name === 'TRAILER!!!') return out;
    const type = mode & 0o170000;
    if (type === S_IFDIR) out.push({ path: name, type: 'dir', mode: mode & 0o7777 });
    else if (type === S_IFREG) out.push({ path: name, type: 'file', data, mode: mode & 0o7777 });
    else if (type === S_IFLNK) out.push({ path: name, type: 'symlink', target: data.toString() });
    else if (type === S_IFCHR) out.push({ path: name, type: 'char', major: field(9), minor: field(10), mode: mode & 0o7777 });
  }
}

/**
 * A regular file's bytes, never through a link: a tree a user could touch may swap a file for a
 * link between our lstat and our read (O_NOFOLLOW on the last component, and the opened file must
 * be a regular file).
 */
export function readNoFollow(path: string): Buffer {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  try {
    if (!fstatSync(fd).isFile()) throw new Error(`${path} is no longer a regular file`);
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** Entries for a directory tree (lstat, no link followed), parents first, in a stable order. */
export function entriesOfTree(root: string, rel = ''): CpioEntry[] {
  const out: CpioEntry[] = [];
  for (const name of readdirSync(join(root, rel)).sort()) {
    const p = rel ? `${rel}/${name}` : name;
    const st = lstatSync(join(root, p));
    if (st.isSymbolicLink()) out.push({ path: p, type: 'symlink', target: readlinkSync(join(root, p)) });
    else if (st.isDirectory()) out.push({ path: p, type: 'dir', mode: st.mode & 0o7777 }, ...entriesOfTree(root, p));
    else if (st.isFile()) out.push({ path: p, type: 'file', data: readNoFollow(join(root, p)), mode: st.mode & 0o7777 });
  }
  return out;
}

/** Write entries out as a tree (device nodes are skipped: they live only in the archive). */
export function writeTree(root: string, entries: CpioEntry[]): void {
  for (const e of entries) {
    const p = join(root, e.path);
    if (e.type === 'dir') mkdirSync(p, { recursive: true, mode: e.mode ?? 0o755 });
    else if (e.type === 'file') writeFileSync(p, e.data, { mode: e.mode ?? 0o644 });
    else if (e.type === 'symlink') symlinkSync(e.target, p);
  }
}
