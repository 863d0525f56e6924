import { describe, expect, it } from 'vitest';
import { resolveText } from '../../lib/descriptor/resolve.js';
import { formatProblem } from '../../lib/descriptor/problem.js';
import { checkResolved } from '../../lib/descriptor/resolve.js';
import type { SiteConfig } from '../../lib/site/config.js';

const site: SiteConfig = {
  stateDir: '/tmp/x', cacheDir: '/tmp/x', logDir: '/tmp/x', qemuUser: 'nobody', kernelPackage: 'k', accel: 'tcg',
  bootTimeoutSec: 60, limits: { maxMemoryMiB: 4096, maxVcpus: 8, maxVmsPerNode: 16 }, sources: ['/etc/vse/site.json'],
};

const check = (xml: string | Buffer): string[] =>
  resolveText('d.xml', Buffer.isBuffer(xml) ? xml : Buffer.from(xml), site).problems.map(formatProblem);

describe('a valid description', () => {
  it('resolves hello.xml with its values and the defaults', () => {
    const r = resolveText('hello.xml', Buffer.from('<vse name="hello">\n  <os base="minimal"/>\n  <vm memory="1G" perNode="2"/>\n</vse>\n'), site);
    expect(r.problems).toEqual([]);
    expect(r.description).toEqual({ name: 'hello', os: { base: 'minimal' }, vm: { memoryMiB: 1024, vcpus: 1, perNode: 2 } });
  });
});

describe('bad input is refused with file:line:col, element path, expectation and hint', () => {
  const cases: { name: string; xml: string | Buffer; expected: string[] }[] = [
    { name: 'empty file', xml: '', expected: ['d.xml:1:1: /: the file is empty; expected an XML document with a <vse> root element'] },
    { name: 'binary garbage', xml: Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 1, 2]), expected: ['d.xml:1:1: /: the file contains NUL bytes (binary data); expected UTF-8 XML text'] },
    { name: 'malformed XML', xml: '<vse name="a">\n  <os base="minimal">\n</vse>\n', expected: ["d.xml:3:1: /: malformed XML: Expected closing tag 'os' (opened in line 2, col 3) instead of closing tag 'vse'; expected well-formed XML"] },
    { name: 'DOCTYPE with an entity', xml: '<?xml version="1.0"?>\n<!DOCTYPE vse [<!ENTITY x SYSTEM "file:///etc/shadow">]>\n<vse name="a"><os base="minimal"/></vse>', expected: ['d.xml:2:1: /: <!DOCTYPE> is not allowed; expected no DTD, no entities; hint: descriptions never expand entities or fetch external files; remove the declaration'] },
    { name: 'wrong root', xml: '<vsx name="a"/>', expected: ['d.xml:1:1: /vsx: the root element is <vsx>; expected a <vse> root element; hint: did you mean "vse"?'] },
    { name: 'unknown attribute', xml: '<vse name="a">\n  <os base="minimal"/>\n  <vm memroy="1G"/>\n</vse>', expected: ['d.xml:3:7: /vse/vm/@memroy: unknown attribute "memroy" on <vm>; expected one of memory, vcpus, perNode; hint: did you mean "memory"?'] },
    { name: 'unknown element', xml: '<vse name="a">\n  <os base="minimal"/>\n  <vmm/>\n</vse>', expected: ['d.xml:3:3: /vse/vmm: unknown element <vmm> in <vse>; expected one of <os>, <vm>; hint: did you mean "vm"?'] },
    { name: 'size without unit', xml: '<vse name="a"><os base="minimal"/><vm memory="512"/></vse>', expected: ['d.xml:1:39: /vse/vm/@memory: "512" is not valid; expected a size with a unit, such as 512M or 2G; hint: write 512M for 512 MiB'] },
    { name: 'negative count', xml: '<vse name="a"><os base="minimal"/><vm perNode="-1"/></vse>', expected: ['d.xml:1:39: /vse/vm/@perNode: "-1" is not valid; expected a whole number such as 1 or 4'] },
    { name: 'too little memory', xml: '<vse name="a"><os base="minimal"/><vm memory="64M"/></vse>', expected: ['d.xml:1:39: /vse/vm/@memory: value out of range; expected at least 96M'] },
    { name: 'zero VMs', xml: '<vse name="a"><os base="minimal"/><vm perNode="0"/></vse>', expected: ['d.xml:1:39: /vse/vm/@perNode: value out of range; expected at least 1'] },
    { name: 'over the site limit', xml: '<vse name="a"><os base="minimal"/><vm memory="8G"/></vse>', expected: ['d.xml:1:39: /vse/vm/@memory: memory 8G exceeds the site limit; expected at most 4G; hint: limit set by site policy (/etc/vse/site.json)'] },
    { name: 'unknown OS base', xml: '<vse name="a"><os base="minimla"/></vse>', expected: ['d.xml:1:19: /vse/os/@base: "minimla" is not valid; expected one of minimal; hint: did you mean "minimal"?'] },
    { name: 'no os', xml: '<vse name="a"/>', expected: ['d.xml:1:1: /vse/os: no <os> element; expected <os base="minimal"/>; hint: every description names the guest it boots'] },
    { name: 'bad name', xml: '<vse name="../x"><os base="minimal"/></vse>', expected: ['d.xml:1:6: /vse/@name: "../x" is not valid; expected a name of letters, digits, ".", "_" or "-" (at most 63, starting with a letter or digit)'] },
    { name: 'duplicate element', xml: '<vse name="a"><os base="minimal"/>\n<os base="minimal"/></vse>', expected: ['d.xml:2:1: /vse/os: <os> appears 2 times; expected at most 1; hint: merge the attributes into one element'] },
    { name: 'too large', xml: `<vse name="a">${' '.repeat(1024 * 1024)}</vse>`, expected: ['d.xml:1:1: /: the file is 1048596 bytes; expected at most 1048576 bytes; hint: a description names files; it does not contain them'] },
    { name: 'too deep', xml: `${'<vse>'.repeat(40)}${'</vse>'.repeat(40)}`, expected: ['d.xml:1:161: /vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse/vse: elements nest deeper than 32 levels; expected at most 32 levels'] },
  ];
  it.each(cases)('$name', ({ xml, expected }) => {
    expect(check(xml)).toEqual(expected);
  });

  it('reports every problem, not only the first', () => {
    const problems = check('<vse name="a">\n<os base="x"/>\n<vm memory="1" vcpus="many"/>\n</vse>');
    expect(problems).toHaveLength(3);
  });
});

describe("the job's copy (JSON from the SPANK plugin) is checked again on the node", () => {
  it('accepts what validate --emit printed', () => {
    const d = checkResolved('{"name":"h","os":{"base":"minimal"},"vm":{"memoryMiB":128,"vcpus":1,"perNode":2}}', 'job', site);
    expect(d.vm.perNode).toBe(2);
  });
  it('refuses values over this node\'s limits', () => {
    expect(() => checkResolved('{"name":"h","os":{"base":"minimal"},"vm":{"memoryMiB":128,"vcpus":1,"perNode":99}}', 'job', site))
      .toThrow('job: /vm/perNode: 99 VMs per node exceed the site limit; expected at most 16');
  });
  it('refuses extra fields and broken JSON', () => {
    expect(() => checkResolved('{"name":"h","os":{"base":"minimal"},"vm":{"memoryMiB":128,"vcpus":1,"perNode":1},"x":1}', 'job', site)).toThrow('expected no "x"');
    expect(() => checkResolved('{', 'job', site)).toThrow('not valid JSON');
  });
});
