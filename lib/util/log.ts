/** A small logger: one line per event, to stderr and optionally to a log file. */
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

export interface Logger {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export interface LoggerOptions {
  /** Tag put in front of every line, e.g. `prolog job=12 node=n1`. */
  tag: string;
  /** Also append every line (with a timestamp) to this file. */
  file?: string;
  /** Write to stderr (default true). */
  stderr?: boolean;
  /** Print info lines to stderr (default true); warnings and errors always go. */
  verbose?: boolean;
}

export function createLogger(opts: LoggerOptions): Logger {
  const toStderr = opts.stderr ?? true;
  const verbose = opts.verbose ?? true;
  let fileOk = opts.file !== undefined;
  if (opts.file !== undefined) {
    try {
      mkdirSync(dirname(opts.file), { recursive: true, mode: 0o755 });
    } catch {
      fileOk = false;
    }
  }
  const write = (level: string, msg: string): void => {
    const line = `${opts.tag}: ${level === 'info' ? '' : `${level}: `}${msg}`;
    if (toStderr && (verbose || level !== 'info')) process.stderr.write(`${line}\n`);
    if (fileOk && opts.file !== undefined) {
      try {
        appendFileSync(opts.file, `${new Date().toISOString()} ${line}\n`, { mode: 0o640 });
      } catch {
        fileOk = false; // a full or read-only log dir must not break the job
      }
    }
  };
  return {
    info: (m) => write('info', m),
    warn: (m) => write('warning', m),
    error: (m) => write('error', m),
  };
}

/** A logger that drops everything (library calls from tests). */
export const silentLogger: Logger = { info() {}, warn() {}, error() {} };
