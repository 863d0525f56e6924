/** Bad input, one layer at a time: each refused with file:line:col, element path, expectation and hint. */
import { describe, expect, it } from 'vitest';
import { fixture } from './fixture.js';

const f = fixture();
const ok = (body: string): string => `<vse name="t">\n  <os base="minimal"/>\n${body}\n</vse>\n`;

describe('a valid description', () => {
  it('resolves to the model with defaults filled in', () => {
    f.write({ 'hello.xml': '<vse name="hello">\n  <os base="minimal"/>\n  <vm memory="1G" perNode="2"/>\n</vse>\n' });
    const r = f.check('hello.xml');
    expect(r.problems).toEqual([]);
    expect(r.description?.vm).toEqual({ memoryMiB: 1024, vcpus: 1, diskMiB: 1024, perNode: 2, hypervisor: 'qemu' });
    expect(r.description?.resources).toEqual({ mounts: [], network: { mode: 'private' } });
  });

  it('reads every element of the language', () => {
    f.write({
      'data/input.txt': 'x',
      'all.xml': `<vse name="all">
  <os base="minimal" release="bookworm" variant="minbase">
    <kernel package="linux-image-cloud-amd64"/>
    <packages><package name="openssh-server"/><package name="nano" state="absent"/></packages>
    <services><service name="ssh" state="enabled"/></services>
  </os>
  <rte name="openmpi"><package name="openmpi-bin"/><env name="OMPI_MCA_btl" value="self,tcp"/><path dir="/usr/lib/openmpi/bin/"/></rte>
  <files>
    <import from="data/input.txt" path="/opt/in.txt" mode="644"/>
    <copy from="/etc/hosts" path="/etc/hosts.orig"/>
    <link target="/opt/in.txt" path="/in"/>
    <delete path="/usr/share/doc"/>
    <edit path="/etc/ssh/sshd_config"><set key="PermitRootLogin" value="no" separator=" "/><replace pattern="^#?Port .*" with="Port 2222"/><append line="UseDNS no"/></edit>
    <write path="/etc/motd" mode="0644">Welcome</write>
  </files>
  <build><step name="app" mode="online" workdir="/opt">make install</step></build>
  <boot><option name="console" value="ttyS0"/><option name="quiet"/></boot>
  <vm memory="512M" vcpus="2" disk="2G" perNode="4" hypervisor="libvirt"/>
  <resources><network mode="none"/></resources>
</vse>`,
    });
    const r = f.check('all.xml');
    expect(r.problems).toEqual([]);
    const d = r.description!;
    expect(d.os).toEqual({
      base: 'minimal', release: 'bookworm', variant: 'minbase', kernel: { package: 'linux-image-cloud-amd64' },
      packages: [{ name: 'openssh-server', state: 'present' }, { name: 'nano', state: 'absent' }], services: [{ name: 'ssh', state: 'enabled' }],
    });
    expect(d.rtes).toEqual([{ name: 'openmpi', packages: [{ name: 'openmpi-bin', state: 'present' }], env: [{ name: 'OMPI_MCA_btl', value: 'self,tcp' }], paths: ['/usr/lib/openmpi/bin'] }]);
    expect(d.files).toEqual([
      { op: 'import', path: '/opt/in.txt', from: f.path('data/input.txt'), mode: '0644' },
      { op: 'copy', path: '/etc/hosts.orig', from: '/etc/hosts' },
      { op: 'link', path: '/in', target: '/opt/in.txt' },
      { op: 'delete', path: '/usr/share/doc' },
      { op: 'edit', path: '/etc/ssh/sshd_config', edits: [{ op: 'set', key: 'PermitRootLogin', value: 'no', separator: ' ' }, { op: 'replace', pattern: '^#?Port .*', with: 'Port 2222' }, { op: 'append', line: 'UseDNS no' }] },
      { op: 'write', path: '/etc/motd', content: 'Welcome', mode: '0644' },
    ]);
    expect(d.build).toEqual([{ name: 'app', mode: 'online', workdir: '/opt', run: 'make install' }]);
    expect(d.boot).toEqual([{ name: 'console', value: 'ttyS0' }, { name: 'quiet' }]);
    expect(d.vm).toEqual({ memoryMiB: 512, vcpus: 2, diskMiB: 2048, perNode: 4, hypervisor: 'libvirt' });
    expect(d.resources.network).toEqual({ mode: 'none' });
  });
});

describe('bad input', () => {
  const cases: { name: string; xml: string | Buffer; expected: string[] }[] = [
    { name: 'empty file', xml: '', expected: ['d.xml:1:1: /: the file is empty; expected an XML document with a <vse> root element'] },
    { name: 'binary garbage', xml: Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 1, 2]), expected: ['d.xml:1:1: /: the file contains NUL bytes (binary data); expected UTF-8 XML text'] },
    { name: 'not UTF-8', xml: Buffer.from([0x3c, 0x76, 0xff, 0xfe]), expected: ['d.xml:1:1: /: the file is not valid UTF-8; expected UTF-8 XML text'] },
    { name: 'malformed XML', xml: '<vse name="a">\n  <os base="minimal">\n</vse>\n', expected: ["d.xml:3:1: /: malformed XML: Expected closing tag 'os' (opened in line 2, col 3) instead of closing tag 'vse'; expected well-formed XML"] },
    { name: 'DOCTYPE with an external entity', xml: '<?xml version="1.0"?>\n<!DOCTYPE vse [<!ENTITY x SYSTEM "file:///etc/shadow">]>\n<vse name="a">&x;</vse>', expected: ['d.xml:2:1: /: <!DOCTYPE> is not allowed; expected no DTD, no entities; hint: descriptions never expand entities or fetch external files; remove the declaration'] },
    { name: 'too large', xml: `<vse name="a">${' '.repeat(1024 * 1024)}</vse>`, expected: ['d.xml:1:1: /: the file is 1048596 bytes; expected at most 1048576 bytes; hint: a description names files; it does not contain them'] },
    { name: 'too deep', xml: `${'<vse>'.repeat(40)}${'</vse>'.repeat(40)}`, expected: [`d.xml:1:161: ${'/vse'.repeat(33)}: elements nest deeper than 32 levels; expected at most 32 levels`] },
    { name: 'wrong root', xml: '<vsx name="a"/>', expected: ['d.xml:1:1: /vsx: the root element is <vsx>; expected a <vse> root element; hint: did you mean "vse"?'] },
    { name: 'unknown attribute', xml: ok('  <vm memroy="1G"/>'), expected: ['d.xml:3:7: /vse/vm/@memroy: unknown attribute "memroy" on <vm>; expected one of memory, vcpus, disk, perNode, hypervisor, replace, locked; hint: did you mean "memory"?'] },
    { name: 'unknown element', xml: ok('  <vmm/>'), expected: ['d.xml:3:3: /vse/vmm: unknown element <vmm> in <vse>; expected one of <os>, <vm>, <resources>, <rte>, <files>, <build>, <boot>; hint: did you mean "vm"?'] },
    { name: 'list item outside its container', xml: ok('  <package name="vim"/>'), expected: ['d.xml:3:3: /vse/package: unknown element <package> in <vse>; expected one of <os>, <vm>, <resources>, <rte>, <files>, <build>, <boot>; hint: <package> goes inside <packages>'] },
    { name: 'size without unit', xml: ok('  <vm memory="512"/>'), expected: ['d.xml:3:7: /vse/vm/@memory: "512" is not valid; expected a size with a unit, such as 512M or 2G; hint: write 512M for 512 MiB'] },
    { name: 'negative count', xml: ok('  <vm perNode="-1"/>'), expected: ['d.xml:3:7: /vse/vm/@perNode: "-1" is not valid; expected a whole number such as 1 or 4'] },
    { name: 'absurd size', xml: ok('  <vm memory="99999999999999G"/>'), expected: ['d.xml:3:7: /vse/vm/@memory: value out of range; expected at most 1048576M'] },
    { name: 'too little memory', xml: ok('  <vm memory="64M"/>'), expected: ['d.xml:3:7: /vse/vm/@memory: value out of range; expected at least 96M'] },
    { name: 'zero VMs', xml: ok('  <vm perNode="0"/>'), expected: ['d.xml:3:7: /vse/vm/@perNode: value out of range; expected at least 1'] },
    { name: 'unknown OS base', xml: '<vse name="a"><os base="minimla"/></vse>', expected: ['d.xml:1:19: /vse/os/@base: "minimla" is not valid; expected one of minimal, debian; hint: did you mean "minimal"?'] },
    { name: 'no OS base', xml: '<vse name="a"/>', expected: ['d.xml:1:1: /vse: no OS base; expected one of minimal, debian; hint: set <os base="minimal"/> (or debian), or extend a base description'] },
    { name: 'bad name', xml: '<vse name="../x"><os base="minimal"/></vse>', expected: ['d.xml:1:6: /vse/@name: "../x" is not valid; expected a name of letters, digits, ".", "_" or "-" (at most 63, starting with a letter or digit)'] },
    { name: 'upper-case package', xml: ok('  <os><packages><package name="Vim"/></packages></os>'), expected: ['d.xml:3:3: /vse/os: <os> appears twice; expected at most once; hint: merge the attributes into one element'] },
    { name: 'upper-case package, one <os>', xml: '<vse name="a"><os base="minimal"><packages><package name="Vim"/></packages></os></vse>', expected: ['d.xml:1:53: /vse/os/packages/package[?]/@name: "Vim" is not valid; expected a Debian package name (lower case letters, digits, "+", "-", "."); hint: package names are lower case: "vim"'] },
    { name: 'duplicate key in one layer', xml: ok('  <boot><option name="quiet"/>\n  <option name="quiet"/></boot>'), expected: ['d.xml:4:3: /vse/boot/option[quiet]: name "quiet" appears twice in this file; expected each name once per layer; hint: merge the two elements into one'] },
    { name: 'duplicate path after normalising', xml: ok('  <files><delete path="/opt/x"/><delete path="/opt//x/"/></files>'), expected: ['d.xml:3:33: /vse/files/delete[/opt/x]: path "/opt/x" appears twice in this file; expected each path once per layer; hint: merge the two elements into one'] },
    { name: 'relative guest path', xml: ok('  <files><delete path="opt/x"/></files>'), expected: ['d.xml:3:18: /vse/files/delete[?]/@path: "opt/x" is not valid; expected an absolute path in the guest, such as /opt/app; hint: write "/opt/x"'] },
    { name: 'missing required attribute', xml: ok('  <resources><mount guest="/mnt"/></resources>'), expected: ['d.xml:3:14: /vse/resources/mount[/mnt]/@host: <mount> has no "host" attribute; expected host="..."; hint: the host path (must be allowed by the site policy)'] },
    { name: 'empty build step', xml: ok('  <build><step name="x"/></build>'), expected: ['d.xml:3:10: /vse/build/step[x]: <step> is empty; expected its text content; hint: the command to run goes between the tags'] },
    { name: 'bad regular expression', xml: ok('  <files><edit path="/etc/x"><replace pattern="(" with=""/></edit></files>'), expected: ['d.xml:3:39: /vse/files/edit[/etc/x]/replace[1]/@pattern: "(" is not valid; expected a valid regular expression; hint: Invalid regular expression: /(/: Unterminated group'] },
    { name: 'boot value with a space', xml: ok('  <boot><option name="x" value="a b"/></boot>'), expected: ['d.xml:3:26: /vse/boot/option[x]/@value: "a b" is not valid; expected a value without spaces or quotes'] },
    { name: 'bad lock list', xml: ok('  <vm locked="memroy"/>'), expected: ['d.xml:3:7: /vse/vm/@locked: "memroy" is not valid; expected true, or attribute names of <vm> (memory, vcpus, disk, perNode, hypervisor); hint: did you mean "memory"?'] },
    { name: 'before and after', xml: ok('  <boot><option name="a" before="b" after="c"/></boot>'), expected: ['d.xml:3:9: /vse/boot/option[a]: <option> has both "before" and "after"; expected at most one of them'] },
    { name: 'text where none belongs', xml: ok('  <vm>big</vm>'), expected: ['d.xml:3:3: /vse/vm: unexpected text "big" in <vm>; expected only child elements'] },
  ];
  it.each(cases)('$name', ({ xml, expected }) => {
    f.write({ 'd.xml': xml });
    expect(f.check('d.xml').problems).toEqual(expected);
  });

  it.each([
    ['packages on the minimal base', '<vse name="a"><os base="minimal"><packages><package name="vim"/></packages></os></vse>', ['d.xml:1:44: /vse/os/packages/package[vim]: installing or removing packages needs a Debian base; expected no packages, services or online steps on the minimal base; hint: the minimal guest is busybox in memory; use os base="debian" for packages']],
    ['an online step on the minimal base', '<vse name="a"><os base="minimal"/><build><step name="s" mode="online">make</step></build></vse>', ['d.xml:1:57: /vse/build/step[s]/@mode: online build step "s" needs a Debian base; expected no packages, services or online steps on the minimal base; hint: the minimal guest is busybox in memory; use os base="debian" for packages']],
  ])('what this version cannot build is refused at submission: %s', (_n, xml, expected) => {
    f.write({ 'd.xml': xml });
    expect(f.check('d.xml', true).problems).toEqual(expected);
  });

  it('reports every problem at once, not only the first', () => {
    f.write({ 'many.xml': '<vse name="a">\n<os base="x"/>\n<vm memory="1" vcpus="many"/>\n<boot><option/></boot>\n</vse>' });
    expect(f.check('many.xml').problems).toHaveLength(4);
  });

  it('refuses a missing file and a directory', () => {
    expect(f.check('nope.xml').problems).toEqual(['nope.xml:1:1: /: cannot read the description: no such file; expected a readable XML file']);
    f.write({ 'sub/x.xml': '' });
    expect(f.check('sub').problems).toEqual(['sub:1:1: /: cannot read the description: is a directory; expected a readable XML file']);
  });
});
