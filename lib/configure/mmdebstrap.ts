/**
 * Talking to mmdebstrap: callers' hook argvs as its --customize-hook strings, running it with its
 * output streamed line by line, and reading a failed run's log as the user's mistake or the host's.
 */
import { basename } from 'node:path';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import { HostError, UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { quoteCommand, tail } from '../util/run.js';
import type { Normalized } from './debian-spec.js';

const SPECIAL_HOOKS = new Set(['copy-in', 'copy-out', 'tar-in', 'tar-out', 'upload', 'download', 'sync-in', 'sync-out']);

function shQuote(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** A caller's hook argv as an mmdebstrap --customize-hook value. */
export function hookArgument(argv: string[]): string {
  if (argv.length === 0) throw new Error('customize hook: empty argv');
  if (SPECIAL_HOOKS.has(argv[0] as string)) return argv.map(shQuote).join(' '); // mmdebstrap splits these with shellwords
  return argv.map((w) => (w === '$1' ? '"$1"' : shQuote(w))).join(' ');
}

/**
 * Hooks that copy host files or directories into guestDir and make them root's: mmdebstrap's
 * copy-in keeps numeric owners as the build's namespace sees them (a file of the host's root shows
 * as nobody there, one of the invoking user keeps that user's uid). The sources must be readable
 * by "other" users: the namespace's root reads them.
 */
export function copyInAsRoot(hostPaths: string[], guestDir: string): string[][] {
  if (hostPaths.length === 0) return [];
  if (!guestDir.startsWith('/')) throw new Error(`copyInAsRoot: ${guestDir} is not an absolute guest path`);
  const copied = hostPaths.map((p) => `${guestDir.replace(/\/+$/, '')}/${basename(p)}`);
  return [['copy-in', ...hostPaths, guestDir], ['chroot', '$1', 'chown', '-R', '--no-dereference', '0:0', '--', ...copied]];
}

// ---------------------------------------------------------------------------------------------
// Running mmdebstrap

interface Streamed {
  exitCode: number;
  failed: boolean;
  why: string;
}

/** Like run(), but passes every output line (stdout and stderr interleaved) to onLine as it comes. */
export async function runStreaming(argv: string[], o: { env: Record<string, string>; log: Logger; onLine: (line: string) => void; timeoutMs: number }): Promise<Streamed> {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error('runStreaming: empty command');
  o.log.info(`run: ${quoteCommand(argv)}`);
  const child = execa(file, args, { env: o.env, extendEnv: false, stdin: 'ignore', all: true, buffer: false, reject: false, timeout: o.timeoutMs });
  const all = child.all;
  if (all) {
    const rl = createInterface({ input: all, crlfDelay: Infinity });
    rl.on('line', (l) => o.onLine(l));
  }
  const r = await child;
  const why = r.timedOut ? `timed out after ${o.timeoutMs / 1000} s` : r.signal ? `killed by ${r.signal}` : r.exitCode === undefined ? (r.originalMessage ?? 'could not start') : `exit code ${r.exitCode}`;
  return { exitCode: r.exitCode ?? -1, failed: r.failed, why };
}

// ---------------------------------------------------------------------------------------------
// Failures

/** The error for a failed mmdebstrap run: the user's mistake when the log says so, the host's otherwise. */
export function buildFailure(lines: string[], why: string, n: Normalized, sources: string[]): Error {
  const text = lines.join('\n');
  const step = [...lines].reverse().find((l) => /^(I|vse): /.test(l) && !/received signal|waiting for setup/.test(l)) ?? '(before the first step)';
  const logTail = `\n--- last lines of the build log ---\n${tail(text, 25)}`;
  const cause = { log: text };
  const purging = lines.findIndex((l) => l.startsWith('vse: removing packages'));
  const missing = [...new Set([...text.matchAll(/^E: Unable to locate package (\S+)/gm)].map((m) => m[1] as string))];
  if (missing.length > 0) {
    const removing = purging >= 0 && lines.slice(purging).some((l) => l.startsWith('E: Unable to locate package'));
    const where = `Debian ${n.release} (${sources.map((s) => s.split(' ').slice(1, 3).join(' ')).join(', ')})`;
    const names = missing.map((m) => `"${m}"`).join(', ');
    return new UserError(removing
      ? `cannot remove package ${names}: no such package in ${where}; check the spelling${logTail}`
      : `package ${names} does not exist in ${where}; check the spelling, or the release${logTail}`, { cause });
  }
  const noCandidate = [...new Set([...text.matchAll(/^E: Package '([^']+)' has no installation candidate/gm)].map((m) => m[1] as string))];
  if (noCandidate.length > 0) {
    return new UserError(`package ${noCandidate.map((m) => `"${m}"`).join(', ')} has no installation candidate in Debian ${n.release} (a virtual or removed package; name a real one)${logTail}`, { cause });
  }
  const vse = /^vse-error: (.*)$/m.exec(text);
  if (vse) return new UserError(`${vse[1]}${logTail}`, { cause });
  const units = [...new Set([...text.matchAll(/[Uu]nit(?: file)? (\S+?),? does not exist/g)].map((m) => m[1] as string))];
  if (units.length > 0) {
    return new UserError(`service ${units.map((u) => `"${u}"`).join(', ')} does not exist in the image (no package installs it)${logTail}`, { cause });
  }
  if (/^E: Unable to correct problems, you have held broken packages/m.test(text) || / but it is not (going to be )?installable/.test(text)) {
    const deps = lines.filter((l) => /Depends:|Conflicts:|Breaks:/.test(l)).slice(0, 8).map((l) => l.trim()).join('\n  ');
    return new UserError(`the packages cannot be installed together in Debian ${n.release}:\n  ${deps}${logTail}`, { cause });
  }
  const first = lines.find((l) => l.startsWith('E: ')) ?? why;
  return new HostError(`building the Debian base failed (mmdebstrap ${why}) at step "${step}": ${first}${logTail}`, { cause });
}

/** The full build log of a failed buildDebian, if the error carries one. */
export function buildLogOf(err: unknown): string | undefined {
  const cause = err instanceof Error ? (err.cause as { log?: unknown } | undefined) : undefined;
  return typeof cause?.log === 'string' ? cause.log : undefined;
}
