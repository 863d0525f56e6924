/**
 * Host files a description imports, read with the job user's rights, never root's: `tar` runs as
 * that user and writes an archive into a directory only that user owns; the archive is what the
 * configuration key hashes, and its extracted copy what the image gets.
 */
import { createHash } from 'node:crypto';
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { FileOp } from '../descriptor/model.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { quoteCommand, tail } from '../util/run.js';
import type { PlannedOp } from './apply.js';

/** Whose rights host files are read with, and who runs build steps. */
export interface Builder {
  uid: number;
  gid: number;
  user: string;
}

/** The builder for a command run by `uid`: root builds as nobody unless acting for a job's user. */
export function builderFor(uid: number, gid: number, user: string): Builder {
  return uid === 0 ? { uid: 65534, gid: 65534, user: 'nobody' } : { uid, gid, user };
}

/** Run a command as the builder (the job's user), with a bare environment; a failure quotes its stderr. */
export async function asBuilder(b: Builder, argv: string[], log: Logger): Promise<void> {
  const switching = process.getuid?.() === 0 && b.uid !== 0;
  log.info(`run as ${b.user}: ${quoteCommand(argv)}`);
  const { execa } = await import('execa');
  const r = await execa(argv[0] as string, argv.slice(1), {
    reject: false, stdin: 'ignore', env: { PATH: '/usr/bin:/bin', LC_ALL: 'C' }, extendEnv: false,
    ...(switching ? { uid: b.uid, gid: b.gid } : {}),
  });
  if (r.exitCode !== 0) throw new UserError(`${tail(String(r.stderr), 5) || `exit ${r.exitCode}`}`);
}

export interface Staged {
  ops: PlannedOp[];
  /** sha256 of each import's archive, in order (part of the configuration key). */
  digests: string[];
  /** The staging directory (owned by the builder); remove with cleanup(). */
  dir: string;
  cleanup(): void;
}

/** Stage every import of the description; other operations pass through unchanged. */
export async function stageImports(files: FileOp[], b: Builder, log: Logger): Promise<Staged> {
  const dir = mkdtempSync(join(tmpdir(), 'vse-stage-'));
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true });
  if (process.getuid?.() === 0) chownSync(dir, b.uid, b.gid);
  const ops: PlannedOp[] = [];
  const digests: string[] = [];
  try {
    for (const [i, f] of files.entries()) {
      if (f.op !== 'import') {
        ops.push(f);
        continue;
      }
      const tar = join(dir, `import-${i}.tar`);
      const out = join(dir, `import-${i}`);
      try {
        // content only: the same files give the same archive (and key), whenever they were touched
        await asBuilder(b, ['tar', '--create', '--format=gnu', '--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '--file', tar, '--directory', dirname(f.from), '--', basename(f.from)], log);
        mkdirSync(out);
        if (process.getuid?.() === 0) chownSync(out, b.uid, b.gid);
        await asBuilder(b, ['tar', '--extract', '--no-same-owner', '--file', tar, '--directory', out], log);
      } catch (err) {
        throw new UserError(`<import> ${f.path}: cannot read ${f.from} as ${b.user}: ${(err as Error).message}; hint: host files are read with the job user's rights`, { cause: err });
      }
      digests.push(createHash('sha256').update(readFileSync(tar)).digest('hex'));
      rmSync(tar); // the extracted copy is what the image gets: the staging directory holds only the imports
      ops.push({ op: 'import', path: f.path, staged: join(out, basename(f.from)), ...(f.mode ? { mode: f.mode } : {}) });
    }
  } catch (err) {
    cleanup();
    throw err;
  }
  return { ops, digests, dir, cleanup };
}
