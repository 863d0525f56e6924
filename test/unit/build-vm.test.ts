/** The build VM of a Debian child, without a VM: its bootstrap, its runtime, the result disk and what it means. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type GuestResult, diskBySerial, encodeResult } from '../../lib/configure/guest-build.js';
import { BOOTSTRAP, guestModules, judge, parseLdd, readResult } from '../../lib/configure/offline-vm.js';
import { HostError, UserError } from '../../lib/util/errors.js';

const dir = mkdtempSync('/tmp/vse-build-vm-');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const result = (r: Partial<GuestResult>): GuestResult => ({ v: 1, fileLog: [], steps: [], clean: true, ...r });
const step = (name: string, exitCode: number | null, output: string, more: Partial<GuestResult['steps'][number]> = {}): GuestResult['steps'][number] =>
  ({ name, exitCode, signal: null, timedOut: false, ms: 5, output, ...more });

describe('the bootstrap on the kernel command line', () => {
  it('holds no double quote and no word the initramfs takes for an option of its own', () => {
    expect(BOOTSTRAP).not.toContain('"');
    for (const word of BOOTSTRAP.split(/\s+/)) {
      expect(['ro', 'rw', 'debug', 'break', 'noresume', 'fastboot', 'forcefsck', 'fsckfix']).not.toContain(word);
      expect(word).not.toMatch(/^(init|root|rootflags|rootfstype|rootdelay|nfsroot|ip|boot|resume|resume_offset|panic|debug|break|blacklist|netconsole|BOOTIF|drop_capabilities|initramfs\.runsize|ubi\.mtd|fsck\.\w+)=/);
    }
  });
});

describe('the runtime handed to the guest', () => {
  it('takes the libraries and the loader from ldd, and nothing from a static program', () => {
    const text = '\tlinux-vdso.so.1 (0x00007ffd)\n\tlibstdc++.so.6 => /lib/x86_64-linux-gnu/libstdc++.so.6 (0x00007f01)\n' +
      '\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f02)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f03)\n';
    expect(parseLdd(text)).toEqual({ libs: ['/lib/x86_64-linux-gnu/libstdc++.so.6', '/lib/x86_64-linux-gnu/libc.so.6'], loader: '/lib64/ld-linux-x86-64.so.2' });
    expect(parseLdd('\tnot a dynamic executable\n')).toEqual({ libs: [] });
  });

  it('carries the guest program and the modules it imports, and refuses one that needs a package', () => {
    const js = join(dir, 'js');
    mkdirSync(join(js, 'util'), { recursive: true });
    writeFileSync(join(js, 'main.js'), "import { a } from './a.js';\nimport { readFileSync } from 'node:fs';\nexport { b } from './util/b.js';\n");
    writeFileSync(join(js, 'a.js'), "import '../js/util/b.js';\nexport const a = 'text with from and import in it';\n");
    writeFileSync(join(js, 'util', 'b.js'), 'export const b = 1;\n');
    expect(guestModules(join(js, 'main.js')).sort()).toEqual([join(js, 'a.js'), join(js, 'main.js'), join(js, 'util', 'b.js')]);
    writeFileSync(join(js, 'util', 'b.js'), "import { execa } from 'execa';\n");
    expect(() => guestModules(join(js, 'main.js'))).toThrow(/imports execa: the build VM program may import only its own modules/);
  });

  it('finds its disks by serial number', () => {
    const sys = join(dir, 'sys');
    for (const [d, serial] of [['vda', ''], ['vdb', 'vse-run\n'], ['vdc', 'vse-out']]) {
      mkdirSync(join(sys, d as string), { recursive: true });
      writeFileSync(join(sys, d as string, 'serial'), serial as string);
    }
    mkdirSync(join(sys, 'loop0'));
    expect(diskBySerial('vse-run', sys)).toBe('/dev/vdb');
    expect(diskBySerial('vse-out', sys)).toBe('/dev/vdc');
    expect(diskBySerial('vse-in', sys)).toBeUndefined();
  });
});

describe('the result disk', () => {
  it('holds one line of JSON, read back from a disk of zeros; step outputs lose their beginning when it would not fit', () => {
    const r = result({ fileLog: ['<write> /a: done'], steps: [step('make', 0, `${'x'.repeat(5000)}the end\n`)] });
    const disk = join(dir, 'result.raw');
    writeFileSync(disk, Buffer.concat([encodeResult(r, 1 << 20), Buffer.alloc(4096)]));
    expect(readResult(disk)).toEqual(r);
    const small = encodeResult(r, 2000);
    expect(small.length).toBeLessThanOrEqual(2000);
    writeFileSync(disk, Buffer.concat([small, Buffer.alloc(4096)]));
    const cut = readResult(disk);
    expect(cut?.steps[0]?.output).toMatch(/^\[\.\.\. cut\]\nx+the end\n$/);
    writeFileSync(disk, Buffer.alloc(4096));
    expect(readResult(disk)).toBeUndefined();
  });

  it('a failed step is named by the plan and quoted; a file operation fails as the host would say it', () => {
    const steps = [{ name: 'fetch' }, { name: 'configure' }, { name: 'never' }];
    const failed = judge(result({ fileLog: ['<link> /l: done'], steps: [step('fetch', 0, 'ok\n'), step('x', 3, 'checking for cc... no\n')] }), steps);
    expect(failed.error).toBeInstanceOf(UserError);
    expect(failed.error?.message).toBe('build step "configure" failed (exit 3):\nchecking for cc... no');
    expect(failed.log).toBe('<link> /l: done\n--- step fetch (offline, exit 0, 5 ms)\nok\n--- step configure (offline, exit 3, 5 ms)\nchecking for cc... no');
    expect(judge(result({ steps: [step('a', null, '', { signal: 'SIGKILL', timedOut: true })] }), steps).error?.message).toBe('build step "fetch" failed (timed out):\n(no output)');
    const op = 'file operation <edit> /nope failed: no such file in the image (edit changes existing files; use <write> to create one)';
    const user = judge(result({ failure: { kind: 'user', message: op } }), []).error;
    expect(user).toBeInstanceOf(UserError);
    expect(user?.message).toBe(op);
    expect(judge(result({ failure: { kind: 'host', message: 'cannot prepare the build VM: mount' } }), []).error).toBeInstanceOf(HostError);
  });

  it('is kept only when every step ran and the disk was made clean', () => {
    expect(judge(result({ steps: [step('a', 0, '')] }), [{ name: 'a' }])).toEqual({ log: '--- step a (offline, exit 0, 5 ms)\n' });
    expect(judge(result({}), [{ name: 'a' }]).error?.message).toBe('the build VM ran 0 of 1 step(s)');
    const unclean = judge(result({ clean: false, cleanError: 'umount /run/vse-root: target is busy' }), []).error;
    expect(unclean).toBeInstanceOf(HostError);
    expect(unclean?.message).toContain('could not make its disk clean (umount /run/vse-root: target is busy)');
  });
});
