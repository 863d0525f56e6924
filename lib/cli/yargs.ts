/** The whole command line with yargs (help, every command, usage errors): loaded off the fast path. */
import { cmdCleanup, cmdCreate, cmdDoctor, cmdDestroy, cmdGc, cmdImages, cmdResolve, cmdRun, cmdStatus, cmdValidate } from './commands.js';

/** Runs the command; resolves with the exit code (`run FILE -- CMD` passes the command's on; `command` is what followed `--`). */
export async function runYargs(argv: string[], command: string[] = []): Promise<number> {
  let exitCode = 0;
  // a dynamic import: yargs is an ES module, and the bundles are CommonJS (.ci/bundle.js)
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
    .command('gc', 'remove what ended jobs left on this host, configurations no job uses, leftovers of crashed builds', (y) =>
      y.option('older-than', { type: 'number', describe: 'days since last use (default: the site\'s cacheMaxAgeDays, 30)' }).option('dry-run', { type: 'boolean', default: false }).option('json', { type: 'boolean', default: false }),
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
    .command('doctor', 'what this host can do: accelerator (KVM by trying, else TCG), tools, kernel features, libvirt', (y) =>
      y.option('json', { type: 'boolean', default: false }),
    async (a) => {
      exitCode = await cmdDoctor(a.json);
    })
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
}
