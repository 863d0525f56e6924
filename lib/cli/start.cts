/**
 * What the launchers load (.ci/launcher): a program's bundle from this directory (.ci/bundle.js),
 * run. Most of a short vse run is V8 compiling JavaScript, so the bundle's files are compiled with
 * the code caches `make build` wrote beside them (`FILE.cjs.cache`; vse's hold the functions a
 * `vse validate` compiled). V8 takes a cache only if it fits (same V8, same flags, same source
 * length) and else compiles as usual: a cache changes how fast vse starts, never what it does.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { Module, createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { Script } from 'node:vm';

type Program = 'vse' | 'prolog' | 'epilog';

/** While a cache is written: the files to compile here (those without import(), which vm.Script lacks), and what was compiled. */
let writing: { files: Set<string>; scripts: Map<string, Script> } | undefined;

/** The bundle's files load each other through this; anything else goes to node. */
function requireFor(file: string): (id: string) => unknown {
  const nodeRequire = createRequire(file);
  return (id) => (id.startsWith('./') && id.endsWith('.cjs') ? load(join(__dirname, id)) : nodeRequire(id));
}

/** A file of the bundle, compiled with its code cache if it has one, else loaded by node. */
function load(file: string): unknown {
  const known = require.cache[file];
  if (known) return known.exports;
  let cachedData: Buffer | undefined;
  if (writing === undefined) {
    try {
      cachedData = readFileSync(`${file}.cache`);
    } catch {
      return createRequire(file)(file);
    }
  } else if (!writing.files.has(file)) {
    return createRequire(file)(file);
  }
  const script = new Script(Module.wrap(readFileSync(file, 'utf8')), { filename: file, cachedData });
  writing?.scripts.set(`${file}.cache`, script);
  // a module like any other: whoever requires this file next gets these exports, not a second copy
  const mod = new Module(file);
  mod.filename = file;
  require.cache[file] = mod;
  (script.runInThisContext() as (...a: unknown[]) => void).call(mod.exports, mod.exports, requireFor(file), mod, file, dirname(file));
  mod.loaded = true;
  return mod.exports;
}

type Main = (argv?: string[]) => Promise<number>;
const mainOf = (program: Program): Main => (load(join(__dirname, `${program}.cjs`)) as { main: Main }).main;

/** Run a program; its exit code is its main's: the command line's for vse, the hooks read their environment. */
export function start(program: Program): void {
  const main = mainOf(program);
  // a hook that never finishes fails, as the top-level await it ran in before (exit 13)
  if (program !== 'vse') process.exitCode = 13;
  void main(program === 'vse' ? process.argv.slice(2) : undefined).then((code) => {
    process.exitCode = code;
  });
}

/**
 * `make build`: write the code caches of a program's `files`: what a run of vse with `argv`
 * compiled, and for what that run did not load (a cache hit of vse create loads a few more files;
 * the hooks are not run here), their top level.
 */
export async function writeCodeCaches(program: Program, files: string[], argv?: string[]): Promise<void> {
  writing = { files: new Set(files.map((f) => join(__dirname, f))), scripts: new Map() };
  if (argv !== undefined) {
    const code = await mainOf(program)(argv);
    if (code !== 0) throw new Error(`${program} ${argv.join(' ')} exited ${code}: no code cache written`);
  }
  for (const file of writing.files) load(file);
  for (const [cache, script] of writing.scripts) writeFileSync(cache, script.createCachedData());
}
