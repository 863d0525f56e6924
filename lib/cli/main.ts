/** The `vse` command line. */
import { parseArgs } from 'node:util';
import { describeFailure } from '../util/errors.js';
import { cmdCreate, cmdExec, cmdResolve, cmdValidate } from './commands.js';

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
    const fast = fastPath(argv);
    if (fast) {
      await fast();
      return 0;
    }
    const { runYargs } = await import('./yargs.js');
    return await runYargs(argv, command);
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
