// `make build`, after tsc: bundle each program (vse, prolog, epilog) from dist/ into dist/bundle/,
// for the launchers (.ci/launcher, lib/cli/start.cts). A process that starts then reads a few files
// instead of resolving and loading ~40 ES modules, and compiles them from the code caches written
// here with this node. Usage: node .ci/bundle.js
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import process from 'node:process';
import { build } from 'rolldown';

const root = resolve(import.meta.dirname, '..');
const out = join(root, 'dist', 'bundle');
const entries = { vse: 'dist/lib/cli/main.js', prolog: 'dist/prolog/main.js', epilog: 'dist/epilog/main.js' };
// what vse runs to fill its caches: the path every validate, resolve and create shares
const training = ['validate', join(root, 'examples', 'hello.xml')];

rmSync(out, { recursive: true, force: true });
const cacheable = {};
for (const [program, entry] of Object.entries(entries)) {
  // one build per program: no chunk is shared between programs, so each program's entry file holds
  // all it loads up front; what it loads with import() becomes chunks, loaded when used
  const { output } = await build({
    input: { [program]: join(root, entry) },
    platform: 'node',
    // yargs reads its locale files beside its own modules: it stays in node_modules, for the CLI's slow path
    // ssh2 (vse exec) is CommonJS with optional native parts it looks for beside itself: it stays too
    external: ['yargs', 'ssh2'],
    // a package's CommonJS build where it has one (fast-xml-parser: one file instead of many modules)
    resolve: { conditionNames: ['node', 'require', 'default'] },
    output: { dir: out, format: 'cjs', strict: true, entryFileNames: '[name].cjs', chunkFileNames: `${program}-[name]-[hash].cjs` },
    logLevel: 'warn',
  });
  // start.cts compiles a file with its cache through vm.Script, which has no import(): files that
  // still use it (the CLI's yargs) get no cache and are loaded by node
  cacheable[program] = output.filter((c) => c.type === 'chunk' && c.dynamicImports.every((d) => d.endsWith('.cjs'))).map((c) => c.fileName);
}
// tsc's start.cjs, without its source map line (the map stays with tsc's output)
writeFileSync(join(out, 'start.cjs'), readFileSync(join(root, 'dist', 'lib', 'cli', 'start.cjs'), 'utf8').replace(/\n\/\/# sourceMappingURL=.*\n?$/, '\n'));

// the caches, each in a node of its own; vse validates an example with only the shipped descriptions
const tmp = mkdtempSync(join(tmpdir(), 'vse-bundle-'));
try {
  const site = join(tmp, 'site.json');
  writeFileSync(site, JSON.stringify({ descriptionDirs: [join(root, 'config', 'descriptions')] }));
  const env = { ...process.env, VSE_SITE_CONFIG: site };
  delete env.NODE_OPTIONS; // V8 takes a cache only under the flags it was written with
  const q = JSON.stringify;
  for (const program of Object.keys(entries)) {
    const call = `require(${q(join(out, 'start.cjs'))}).writeCodeCaches(${q(program)}, ${q(cacheable[program])}${program === 'vse' ? `, ${q(training)}` : ''})`;
    const r = spawnSync(process.execPath, ['-e', call], { env, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`bundle: writing the code caches of ${program} failed:\n${r.stderr}`);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
