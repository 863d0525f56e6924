/**
 * Mechanism 3, offline: build steps run in an unprivileged sandbox (bubblewrap, a user namespace
 * with the image tree as its root, no network), as the job's user, never as root on the host.
 */
import type { Description } from '../descriptor/model.js';
import { UserError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { quoteCommand, tail } from '../util/run.js';
import type { Builder } from './stage.js';

export const BWRAP = '/usr/bin/bwrap';

/** The sandbox command line for one step (data, tested as data). */
export function stepArgs(tree: string, run: string, workdir = '/'): string[] {
  return [
    BWRAP, '--unshare-all', '--unshare-user', '--uid', '0', '--gid', '0', '--die-with-parent', '--new-session',
    '--bind', tree, '/', '--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp',
    '--clearenv', '--setenv', 'PATH', '/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin', '--setenv', 'HOME', '/root',
    '--chdir', workdir, '/bin/sh', '-c', run,
  ];
}

/** Run the offline steps in order; their output goes to the log; a failure names the step and quotes it. */
export async function runOfflineSteps(tree: string, steps: Description['build'], b: Builder, log: Logger): Promise<string> {
  let out = '';
  const switching = process.getuid?.() === 0 && b.uid !== 0;
  for (const s of steps) {
    const argv = stepArgs(tree, s.run, s.workdir);
    log.info(`build step ${s.name} (offline, as ${b.user}): ${quoteCommand(argv)}`);
    const started = Date.now();
    const { execa } = await import('execa');
  const r = await execa(argv[0] as string, argv.slice(1), {
      reject: false, stdin: 'ignore', all: true, env: {}, extendEnv: false, timeout: 3_600_000,
      ...(switching ? { uid: b.uid, gid: b.gid } : {}),
    });
    const text = String(r.all ?? '');
    out += `--- step ${s.name} (offline, exit ${r.exitCode ?? r.signal}, ${Date.now() - started} ms)\n${text}${text.endsWith('\n') || !text ? '' : '\n'}`;
    if (r.exitCode !== 0) {
      throw new UserError(`build step "${s.name}" failed (${r.timedOut ? 'timed out' : r.signal ? `killed by ${r.signal}` : `exit ${r.exitCode}`}):\n${tail(text, 20) || '(no output)'}`);
    }
  }
  return out;
}
