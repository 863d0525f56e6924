/** The one place that starts short-lived tools: logs the exact command, keeps output for errors. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HostError } from './errors.js';
import type { Logger } from './log.js';

export interface RunResult {
  command: string;
  exitCode: number;
  stdout: string;
  stderr: string;
  durationMs: number;
}

export interface RunOptions {
  cwd?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
  log?: Logger;
  /** Do not throw on a non-zero exit; the caller inspects exitCode. */
  allowFailure?: boolean;
  /** What the program reads on stdin (from a file: see stdinFile). */
  input?: string;
  /** Send stderr to this file instead of keeping it (for programs that leave a daemon behind). */
  stderrFile?: string;
}

/** Quote an argv for logs and error messages (never for a shell: nothing here uses one). */
export function quoteCommand(argv: readonly string[]): string {
  return argv.map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : `'${a.replace(/'/g, `'\\''`)}'`)).join(' ');
}

/** Last lines of a text, for error messages. */
export function tail(text: string, lines = 20): string {
  const all = text.trimEnd().split('\n');
  return all.slice(-lines).join('\n');
}

/**
 * A private file holding `text`, for a program's stdin, and how to remove it. Not a pipe written
 * by this process: execa's `input` once left `ip -batch -` waiting on a pipe that never got its
 * bytes nor its end (one deploy of some thousands hung for good); a file has both.
 */
function stdinFile(text: string): { file: string; remove(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'vse-stdin-'));
  const file = join(dir, 'input');
  writeFileSync(file, text, { mode: 0o600 });
  return { file, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error('run: empty command');
  const command = quoteCommand(argv);
  // what goes to stdin is part of the command (`ip -batch -`): logged with it, a line per `;`
  opts.log?.info(`run: ${command}${opts.input !== undefined ? ` <<< '${opts.input.trimEnd().replace(/\n/g, '; ')}'` : ''}`);
  const started = Date.now();
  // loaded on first use: commands that start no tool (validate, a cache hit of create) start faster
  if (opts.stderrFile !== undefined) return runToFile(file, args, command, opts.stderrFile, opts, started);
  const { execa } = await import('execa');
  const stdin = opts.input === undefined ? undefined : stdinFile(opts.input);
  let r;
  try {
    r = await execa(file, args, {
      cwd: opts.cwd,
      env: opts.env,
      extendEnv: opts.env === undefined,
      timeout: opts.timeoutMs,
      reject: false,
      stdin: stdin ? { file: stdin.file } : 'ignore',
      stripFinalNewline: false,
    });
  } finally {
    stdin?.remove();
  }
  const result: RunResult = {
    command,
    exitCode: r.exitCode ?? -1,
    stdout: String(r.stdout ?? ''),
    stderr: String(r.stderr ?? ''),
    durationMs: Date.now() - started,
  };
  if (r.failed && !opts.allowFailure) {
    const why = r.timedOut
      ? `timed out after ${opts.timeoutMs} ms`
      : r.signal
        ? `killed by ${r.signal}`
        : r.exitCode === undefined
          ? (r.originalMessage ?? 'could not start')
          : `exit code ${r.exitCode}`;
    const output = tail(`${result.stderr}${result.stdout}`);
    throw new HostError(`${command}: ${why}${output ? `\n${output}` : ''}`, { cause: r });
  }
  return result;
}

/**
 * run() for a program that leaves a daemon behind (vse-userns): its stderr goes to a file by
 * descriptor, so nothing of this process stays open in the daemon, and the call ends when the
 * program does.
 */
async function runToFile(file: string, args: string[], command: string, stderrFile: string, opts: RunOptions, started: number): Promise<RunResult> {
  const { closeSync, openSync, readFileSync } = await import('node:fs');
  const { spawn } = await import('node:child_process');
  const errFd = openSync(stderrFile, 'a', 0o640);
  try {
    const child = spawn(file, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', errFd], timeout: opts.timeoutMs });
    let stdout = '';
    child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()));
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (c, s) => resolve([c, s]));
    });
    const result: RunResult = { command, exitCode: code ?? -1, stdout, stderr: '', durationMs: Date.now() - started };
    if ((code !== 0 || signal) && !opts.allowFailure) {
      let output = '';
      try {
        output = tail(readFileSync(stderrFile, 'utf8'));
      } catch {
        // unreadable: the exit status says enough
      }
      throw new HostError(`${command}: ${signal ? `killed by ${signal}` : `exit code ${code}`}${output ? `\n${output}` : ''}`);
    }
    return result;
  } finally {
    closeSync(errFd);
  }
}
