/** The one place that starts short-lived tools: logs the exact command, keeps output for errors. */
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
  input?: string;
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

export async function run(argv: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const [file, ...args] = argv;
  if (file === undefined) throw new Error('run: empty command');
  const command = quoteCommand(argv);
  opts.log?.info(`run: ${command}`);
  const started = Date.now();
  // loaded on first use: commands that start no tool (validate, a cache hit of create) start faster
  const { execa } = await import('execa');
  const r = await execa(file, args, {
    cwd: opts.cwd,
    env: opts.env,
    extendEnv: opts.env === undefined,
    timeout: opts.timeoutMs,
    reject: false,
    stdin: opts.input === undefined ? 'ignore' : 'pipe',
    input: opts.input,
    stripFinalNewline: false,
  });
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
