#!/usr/bin/env node
/** The `vse` command line. */
import { parseArgs } from 'node:util';
import { describeFailure } from '../util/errors.js';
import { cmdCleanup, cmdExec, cmdCreate, cmdDestroy, cmdGc, cmdImages, cmdResolve, cmdRun, cmdStatus, cmdValidate } from './commands.js';

/**
 * `vse validate` runs at every submission (the SPANK plugin) and `vse create` in every prolog: plain
 * calls of them (and of `resolve`) skip loading yargs. Anything else (help, mistakes, other
 * commands) goes to yargs.
 */
function fastPath(argv: string[]): (() => void | Promise<void>) | undefined {
  const [cmd, ...rest] = argv;
  if ((cmd !== 'validate' && cmd !== 'resolve' && cmd !== 'create') || rest.some((a) => a === '--help' || a === '-h')) return undefined;
  try {
    const { values, positionals } = parseArgs({
      args: rest, allowPositionals: true, strict: true,
      options: cmd === 'validate' ? { emit: { type: 'boolean' } } : cmd === 'create' ? { json: { type: 'boolean' }, verbose: { type: 'boolean', short: 'v' } } : { json: { type: 'boolean' }, explain: { type: 'boolean' } },
    });
    const [file] = positionals;
    if (positionals.length !== 1 || file === undefined) return undefined;
    const v = values as Record<string, boolean | undefined>;
    if (cmd === 'create') return () => cmdCreate(file, v.json === true, v.verbose === true);
    return cmd === 'validate' ? () => cmdValidate(file, v.emit === true) : () => cmdResolve(file, v.json === true, v.explain === true);
  } catch {
    return undefined;
  }
}

export async function main(argv: string[]): Promise<number> {
  try {
    if (argv[0] === 'exec') return await cmdExec(argv.slice(1));
    // `vse run FILE [options] -- CMD...`: the command is not for yargs
    let command: string[] = [];
    const dd = argv.indexOf('--');
    if (argv[0] === 'run' && dd >= 0) {
      command = argv.slice(dd + 1);
      argv = argv.slice(0, dd);
    }
    let exitCode = 0;
    const fast = fastPath(argv);
    if (fast) {
      await fast();
      return 0;
    }
    const { default: yargs } = await import('yargs');
    await yargs(argv)
      .scriptName('vse')
      .usage('$0 <command> [options]\n\nVirtualized system environments: boot a job\'s described system as VMs.')
      .command('validate <file>', 'check a description; list every problem', (y) =>
        y.positional('file', { type: 'string', demandOption: true }).option('emit', { type: 'boolean', default: false, describe: 'print the job\'s copy of the description (your own layers, as JSON) for the scheduler plugin' }),
      (a) => cmdValidate(a.file, a.emit))
      .command('resolve <file>', 'print the resolved description (all layers merged)', (y) =>
        y.positional('file', { type: 'string', demandOption: true }).option('json', { type: 'boolean', default: false })
          .option('explain', { type: 'boolean', default: false, describe: 'show which layer (file:line) set each value, and what it overrode' }),
      (a) => cmdResolve(a.file, a.json, a.explain))
      .command('create <file>', 'build (or reuse) the guest configuration; print its key and path', (y) =>
        y.positional('file', { type: 'string', demandOption: true }).option('json', { type: 'boolean', default: false }).option('verbose', { alias: 'v', type: 'boolean', default: false }),
      async (a) => cmdCreate(a.file, a.json, a.verbose))
      .command('images', 'list the configurations in the cache', (y) => y.option('json', { type: 'boolean', default: false }),
        async (a) => cmdImages(a.json))
      .command('destroy <what>', 'remove a configuration: by key, or the one a description yields', (y) =>
        y.positional('what', { type: 'string', demandOption: true, describe: 'a configuration key or a description file' }),
      async (a) => cmdDestroy(a.what))
      .command('gc', 'remove configurations no job uses and leftovers of crashed builds', (y) =>
        y.option('older-than', { type: 'number', default: 30, describe: 'days since last use' }).option('dry-run', { type: 'boolean', default: false }).option('json', { type: 'boolean', default: false }),
      async (a) => cmdGc(a.olderThan, a.dryRun, a.json))
      .command('run <file>', 'boot the description\'s VMs on this machine, run a command in them (run FILE -- CMD...), remove them', (y) =>
        y.positional('file', { type: 'string', demandOption: true }).option('quiet', { alias: 'q', type: 'boolean', default: false })
          .option('all', { type: 'boolean', default: false, describe: 'run the command in every VM (output lines labelled), not only the first' }),
      async (a) => {
        exitCode = await cmdRun(a.file, !a.quiet, command, a.all);
      })
      .command('status', 'list the VMs on this host', (y) =>
        y.option('job', { type: 'string' }).option('node', { type: 'string' }).option('json', { type: 'boolean', default: false }),
      async (a) => cmdStatus(a.job, a.node, a.json))
      .command('exec', 'run a command in a job\'s VM: vse exec [--job ID] [--vm N|--all] -- CMD (vse exec --help)', (y) => y, () => undefined)
      .command('cleanup', 'stop and remove everything of a job on this host', (y) =>
        y.option('job', { type: 'string', demandOption: true }).option('node', { type: 'string' }).option('json', { type: 'boolean', default: false }),
      async (a) => cmdCleanup(a.job, a.node, a.json))
      .demandCommand(1, 'give a command; see --help')
      .strict()
      .help()
      .version(false)
      .fail((msg, err) => {
        if (err) throw err;
        throw Object.assign(new Error(msg), { usage: true });
      })
      .parseAsync();
    return exitCode;
  } catch (err) {
    if (err instanceof Error && (err as { help?: boolean }).help) {
      process.stdout.write(`${err.message}\n`);
      return 0;
    }
    if (err instanceof Error && (err as { usage?: boolean }).usage) {
      process.stderr.write(`vse: ${err.message}\n(vse --help lists the commands)\n`);
      return 2;
    }
    const f = describeFailure(err);
    process.stderr.write(`${f.text}\n`);
    return f.exitCode;
  }
}

const isMain = process.argv[1] !== undefined && import.meta.url === (await import('node:url')).pathToFileURL(process.argv[1]).href;
if (isMain) process.exitCode = await main(process.argv.slice(2));
