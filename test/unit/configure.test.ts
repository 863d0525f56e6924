/** Image-tree operations: they never leave the tree, whatever links the image holds. */
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { applyFileOps, editText } from '../../lib/configure/apply.js';
import { resolveIn } from '../../lib/configure/guestpath.js';
import { stepArgs } from '../../lib/configure/steps.js';
import { readNoFollow } from '../../lib/configure/cpio.js';

const root = mkdtempSync('/tmp/vse-tree-');
afterAll(() => rmSync(root, { recursive: true, force: true }));
mkdirSync(join(root, 'etc'));
writeFileSync(join(root, 'etc/hosts'), '127.0.0.1 localhost\n');
symlinkSync('/etc', join(root, 'etcdir'));
symlinkSync('/etc/hosts', join(root, 'hostslink'));
symlinkSync('../../../../etc/passwd', join(root, 'etc/escape'));
const outside = mkdtempSync('/tmp/vse-outside-');
afterAll(() => rmSync(outside, { recursive: true, force: true }));
writeFileSync(join(outside, 'victim'), 'untouched\n');
symlinkSync(join(outside, 'victim'), join(root, 'victimlink'));

describe('paths inside an image tree', () => {
  it('follow absolute links back into the tree', () => {
    expect(resolveIn(root, '/etcdir/hosts')).toBe(join(root, 'etc/hosts'));
    expect(resolveIn(root, '/hostslink', true)).toBe(join(root, 'etc/hosts'));
  });
  it('stop .. at the root of the tree', () => {
    expect(resolveIn(root, '/../../../etc/passwd')).toBe(join(root, 'etc/passwd'));
    expect(resolveIn(root, '/etc/escape', true)).toBe(join(root, 'etc/passwd'));
  });
});

describe('file operations on a tree', () => {
  it('write through a link that points out of the tree replaces the link, and the host file stays', () => {
    applyFileOps(root, [{ op: 'write', path: '/victimlink', content: 'owned' }]);
    expect(readFileSync(join(outside, 'victim'), 'utf8')).toBe('untouched\n');
    expect(lstatSync(join(root, 'victimlink')).isFile()).toBe(true);
  });
  it('edit follows links inside the tree only', () => {
    applyFileOps(root, [{ op: 'edit', path: '/hostslink', edits: [{ op: 'append', line: '10.0.0.1 n1' }] }]);
    expect(readFileSync(join(root, 'etc/hosts'), 'utf8')).toBe('127.0.0.1 localhost\n10.0.0.1 n1\n');
  });
  it('copies, links and deletes within the image; an edit of a missing file names the operation', () => {
    applyFileOps(root, [
      { op: 'copy', path: '/opt/hosts', from: '/etc/hosts' },
      { op: 'link', path: '/opt/h', target: '/opt/hosts' },
      { op: 'delete', path: '/etcdir' },
    ]);
    expect(readFileSync(join(root, 'opt/hosts'), 'utf8')).toContain('10.0.0.1 n1');
    expect(readlinkSync(join(root, 'opt/h'))).toBe('/opt/hosts');
    expect(() => lstatSync(join(root, 'etcdir'))).toThrow();
    expect(readFileSync(join(root, 'etc/hosts'), 'utf8')).toContain('localhost'); // the link went, not its target
    expect(() => applyFileOps(root, [{ op: 'edit', path: '/nope', edits: [] }])).toThrow('file operation <edit> /nope failed: no such file in the image');
  });
});

describe('reading files of a tree a user could change', () => {
  it('never follows a link put where a file was', () => {
    expect(readNoFollow(join(root, 'etc/hosts')).toString()).toContain('localhost');
    expect(() => readNoFollow(join(root, 'hostslink'))).toThrow(/ELOOP|symbolic link/);
  });
});

describe('editing file content', () => {
  it.each([
    ['set replaces the line that sets the key, commented or not', 'a=1\n#PermitRootLogin yes\n', [{ op: 'set' as const, key: 'PermitRootLogin', value: 'no', separator: ' ' }], 'a=1\nPermitRootLogin no\n'],
    ['set appends when no line sets the key', 'a=1\n', [{ op: 'set' as const, key: 'b', value: '2', separator: '=' }], 'a=1\nb=2\n'],
    ['replace works line by line with groups', 'Port 22\nx\n', [{ op: 'replace' as const, pattern: '^Port (\\d+)', with: 'Port 2$1' }], 'Port 222\nx\n'],
    ['append adds a line once', 'x\n', [{ op: 'append' as const, line: 'y' }, { op: 'append' as const, line: 'y' }], 'x\ny\n'],
  ])('%s', (_n, text, edits, expected) => {
    expect(editText(text, edits)).toBe(expected);
  });
});

describe('the build step sandbox', () => {
  it('is a user namespace with the tree as root, no network, a fresh /proc, /dev and /tmp', () => {
    const a = stepArgs('/t', 'make', '/src');
    expect(a.slice(0, 8)).toEqual(['/usr/bin/bwrap', '--unshare-all', '--unshare-user', '--uid', '0', '--gid', '0', '--die-with-parent']);
    expect(a).toEqual(expect.arrayContaining(['--bind', '/t', '/', '--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp', '--clearenv']));
    expect(a.slice(-5)).toEqual(['--chdir', '/src', '/bin/sh', '-c', 'make']);
  });
});
