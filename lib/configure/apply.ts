/**
 * The paper's mechanisms 1, 2 and 4 on an image tree: files imported from the host (staged
 * beforehand with the job user's rights), copies, links and deletions within the image, and edits
 * of file content. Everything is resolved inside the tree (guestpath.ts); nothing follows a link
 * out of it.
 */
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import type { EditOp, FileOp } from '../descriptor/model.js';
import { UserError } from '../util/errors.js';
import { readNoFollow } from './cpio.js';
import { resolveIn } from './guestpath.js';

/** A file operation ready to apply: imports point at their staged copy. */
export type PlannedOp = Exclude<FileOp, { op: 'import' }> | { op: 'import'; path: string; staged: string; mode?: string };

/** Copy a tree without following any symlink (they are copied as links). */
function copyTree(src: string, dst: string): void {
  const st = lstatSync(src);
  if (st.isSymbolicLink()) {
    rmSync(dst, { recursive: true, force: true });
    symlinkSync(readlinkSync(src), dst);
  } else if (st.isDirectory()) {
    if (existsSync(dst) && !lstatSync(dst).isDirectory()) rmSync(dst, { force: true });
    mkdirSync(dst, { recursive: true, mode: st.mode & 0o7777 });
    for (const name of readdirSync(src)) copyTree(join(src, name), join(dst, name));
  } else if (st.isFile()) {
    if (existsSync(dst) && lstatSync(dst).isDirectory()) rmSync(dst, { recursive: true, force: true });
    else rmSync(dst, { force: true });
    // read without following a link that may have replaced the file since the lstat
    writeFileSync(dst, readNoFollow(src), { mode: st.mode & 0o7777 });
    chmodSync(dst, st.mode & 0o7777);
  }
  // devices, sockets and FIFOs are not copied
}

/** The parent directory of a guest path, created inside the tree. */
function parentIn(root: string, guestPath: string): string {
  const dir = resolveIn(root, posix.dirname(guestPath), true);
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  return dir;
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Apply edit operations to a file's text. */
export function editText(text: string, edits: EditOp[]): string {
  let lines = text.split('\n');
  const trailing = lines.at(-1) === '';
  if (trailing) lines.pop();
  for (const e of edits) {
    if (e.op === 'set') {
      const sep = e.separator;
      const re = new RegExp(`^\\s*#?\\s*${escapeRegex(e.key)}\\s*${sep.trim() === '' ? '\\s' : `${escapeRegex(sep.trim())}`}`);
      const line = `${e.key}${sep}${e.value}`;
      const i = lines.findIndex((l) => re.test(l));
      if (i >= 0) lines[i] = line;
      else lines.push(line);
    } else if (e.op === 'replace') {
      const re = new RegExp(e.pattern, 'g');
      lines = lines.map((l) => l.replace(re, e.with));
    } else if (!lines.includes(e.line)) {
      lines.push(e.line);
    }
  }
  return `${lines.join('\n')}\n`;
}

/** Apply the operations in order; an error names the operation. */
export function applyFileOps(root: string, ops: PlannedOp[]): string[] {
  const log: string[] = [];
  for (const op of ops) {
    const what = `<${op.op}> ${op.path}`;
    try {
      if (op.op === 'delete') {
        rmSync(resolveIn(root, op.path), { recursive: true, force: true });
      } else if (op.op === 'link') {
        const at = join(parentIn(root, op.path), posix.basename(op.path));
        rmSync(at, { recursive: true, force: true });
        symlinkSync(op.target, at);
      } else if (op.op === 'write') {
        const at = join(parentIn(root, op.path), posix.basename(op.path));
        if (existsSync(at) && lstatSync(at).isSymbolicLink()) unlinkSync(at);
        writeFileSync(at, op.content.endsWith('\n') || op.content === '' ? op.content : `${op.content}\n`);
        chmodSync(at, op.mode ? parseInt(op.mode, 8) : 0o644);
      } else if (op.op === 'edit') {
        const at = resolveIn(root, op.path, true);
        if (!existsSync(at) || !lstatSync(at).isFile()) throw new UserError('no such file in the image (edit changes existing files; use <write> to create one)');
        const mode = lstatSync(at).mode & 0o7777;
        writeFileSync(at, editText(readFileSync(at, 'utf8'), op.edits));
        chmodSync(at, mode);
      } else if (op.op === 'copy') {
        const src = resolveIn(root, op.from, true);
        if (!existsSync(src)) throw new UserError(`no ${op.from} in the image to copy`);
        copyTree(src, join(parentIn(root, op.path), posix.basename(op.path)));
      } else {
        const at = join(parentIn(root, op.path), posix.basename(op.path));
        copyTree(op.staged, at);
        if (op.mode) chmodSync(at, parseInt(op.mode, 8));
      }
      log.push(`${what}: done`);
    } catch (err) {
      throw new UserError(`file operation ${what} failed: ${(err as Error).message}`, { cause: err });
    }
  }
  return log;
}

