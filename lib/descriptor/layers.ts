/**
 * The chain of layers behind a description: its `extends` base, that base's base, ... Names are
 * looked up in the admin directories; paths are relative to the file. A layer counts as an admin
 * layer only when it lies in an admin directory that root owns and nobody else can write.
 */
import { closeSync, constants, existsSync, fstatSync, openSync, readFileSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { dirname, relative, resolve, sep } from 'node:path';
import type { Problem } from './problem.js';
import { didYouMean } from './tree.js';
import { MAX_BYTES, type XmlElement, parseXml, tooLarge } from './xml.js';

/** Read a layer: a regular file of at most MAX_BYTES (never a FIFO, a device or a huge file). */
function readLayer(path: string): Buffer {
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if (st.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
    if (!st.isFile()) throw Object.assign(new Error('not a regular file'), { code: 'ENOTREG' });
    if (st.size > MAX_BYTES) throw Object.assign(new Error('too large'), { code: 'EFBIG', size: st.size });
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

export const MAX_LAYERS = 16;

/** The job's copy of every non-admin layer, fixed at submission (what the SPANK plugin hands over). */
export interface Bundle {
  v: 1;
  file: string;
  layers: { path: string; text: string }[];
}

export interface ChainLayer {
  /** The path as named (before symlinks are resolved). */
  file: string;
  real: string;
  admin: boolean;
  root: XmlElement;
  text: string;
}

/** Why a file is, or is not, trusted as an admin layer. */
export function adminCheck(real: string, dirs: string[]): { admin: boolean; why?: string } {
  for (const d of dirs) {
    let rd: string;
    try {
      rd = realpathSync(d);
    } catch {
      continue;
    }
    if (real !== rd && !real.startsWith(`${rd}${sep}`)) continue;
    const parts = relative(rd, real).split(sep);
    let cur = rd;
    for (const p of ['', ...parts]) {
      cur = p === '' ? cur : resolve(cur, p);
      const st = statSync(cur);
      if (st.uid !== 0) return { admin: false, why: `${cur} is not owned by root` };
      if ((st.mode & 0o022) !== 0) return { admin: false, why: `${cur} is writable by others than root` };
    }
    return { admin: true };
  }
  return { admin: false };
}

export interface ChainOptions {
  dirs: string[];
  /** Non-admin layers come from here (the job's bundle) instead of the file system. */
  bundle?: Bundle;
  problems: Problem[];
  warnings: string[];
}

function baseNames(dirs: string[]): string[] {
  const names = new Set<string>();
  for (const d of dirs) {
    try {
      for (const f of readdirSync(d)) if (f.endsWith('.xml')) names.add(f.slice(0, -4));
    } catch {
      // a missing directory has no bases
    }
  }
  return [...names].sort();
}

/** Load the chain from the user's file down to the deepest base; returned base first. */
export function loadChain(file: string, o: ChainOptions): ChainLayer[] {
  const chain: ChainLayer[] = [];
  let next: string | undefined = resolve(file);
  let via: { file: string; line: number; col: number; value: string } | undefined;
  const fail = (message: string, expected: string, hint?: string): void => {
    const at = via ?? { file, line: 1, col: 1 };
    o.problems.push({ file: at.file, line: at.line, col: at.col, path: via ? '/vse/@extends' : '/', message, expected, hint });
  };
  while (next !== undefined) {
    const path: string = next;
    next = undefined;
    let real = path;
    let text: string | undefined;
    let bytes: Buffer | undefined;
    const inBundle = o.bundle?.layers.find((l) => l.path === path);
    try {
      real = realpathSync(path);
    } catch (err) {
      if (!inBundle) {
        const code = (err as NodeJS.ErrnoException).code;
        fail(`cannot read ${via ? `the base ${path}` : 'the description'}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : String(code ?? err)}`, 'a readable XML file');
        return [];
      }
    }
    const admin = adminCheck(real, o.dirs);
    if (chain.some((l) => l.real === real)) {
      const loop = [...chain.map((l) => l.file), path].join(' -> ');
      fail(`extends forms a cycle: ${loop}`, 'a chain of bases that ends', 'one of these files must not extend the others');
      return [];
    }
    if (chain.length >= MAX_LAYERS) {
      fail(`more than ${MAX_LAYERS} layers of extends`, `at most ${MAX_LAYERS}`);
      return [];
    }
    if (o.bundle && !admin.admin) {
      // on a node: the user's layers are the copies made at submission, never the files as they are now
      if (!inBundle) {
        fail(`${path} is not in the job's description (and is not an admin base on this node)`, 'a layer fixed at submission', admin.why);
        return [];
      }
      text = inBundle.text;
    } else {
      try {
        bytes = readLayer(real);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'EFBIG') {
          o.problems.push(tooLarge(path, (err as { size: number }).size));
          return [];
        }
        fail(`cannot read ${chain.length ? `the base ${path}` : 'the description'}: ${code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a directory' : code === 'ENOTREG' ? 'not a regular file' : String(code ?? err)}`, 'a readable XML file');
        return [];
      }
    }
    if (admin.why && o.dirs.some((d) => existsSync(d) && real.startsWith(realpathSync(d)))) {
      o.warnings.push(`${path}: not trusted as an admin layer (${admin.why}); its locks are ignored`);
    }
    const parsed = parseXml(path, bytes ?? Buffer.from(text ?? '', 'utf8'));
    o.problems.push(...parsed.problems);
    if (!parsed.root) return [];
    chain.push({ file: path, real, admin: admin.admin, root: parsed.root, text: text ?? (bytes as Buffer).toString('utf8') });
    const ext = parsed.root.attrs.get('extends');
    if (!ext) break;
    via = { file: path, line: ext.line, col: ext.col, value: ext.value };
    const v = ext.value.trim();
    if (v.includes('/') || v.endsWith('.xml')) {
      next = resolve(dirname(path), v);
    } else if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(v)) {
      fail(`"${ext.value}" is not a base name`, 'a base name such as debian-12, or a path such as ./base.xml');
      return [];
    } else {
      const found = o.dirs.map((d) => resolve(d, `${v}.xml`)).find((p) => existsSync(p));
      if (!found) {
        const names = baseNames(o.dirs);
        fail(`no base description named "${v}"`, names.length ? `one of ${names.join(', ')}` : 'a base in the admin directories', didYouMean(v, names) ?? `bases are looked up in ${o.dirs.join(', ')}`);
        return [];
      }
      next = found;
    }
  }
  return chain.reverse();
}
