/** run(): the one runner of tools. What it hands a program on stdin arrives whole, with its end, and leaves nothing behind. */
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { describe, expect, it } from 'vitest';
import { run } from '../../lib/util/run.js';

const stdinDirs = (): string[] => readdirSync(tmpdir()).filter((n) => n.startsWith('vse-stdin-'));

describe('run() with input', () => {
  it('a program reads the whole input and its end (cat ends), many at once, and no file of it stays', async () => {
    const before = stdinDirs();
    const texts = Array.from({ length: 40 }, (_, i) => `link add b${i} type bridge\nlink set b${i} up\n`);
    const results = await Promise.all(texts.map((t) => run(['/bin/cat'], { input: t, timeoutMs: 20_000 })));
    expect(results.map((r) => r.stdout)).toEqual(texts);
    expect(stdinDirs()).toEqual(before);
  });
  it('a program that does not read its input ends all the same, and a failure still says what ran', async () => {
    expect((await run(['/bin/true'], { input: 'x\n' })).exitCode).toBe(0);
    await expect(run(['/bin/sh', '-c', 'read l; echo "got $l" >&2; exit 3'], { input: 'this\n' })).rejects.toThrow(/exit code 3\ngot this/);
  });
});
