/**
 * Layers: vendor -> site -> project -> user. Merge rules, provenance, extends errors, admin locks
 * (every way around them fails), what counts as an admin layer, and the job's copy on the node.
 */
import { chmodSync, chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { explain, formatExplain } from '../../lib/descriptor/explain.js';
import { formatProblem } from '../../lib/descriptor/problem.js';
import { makeBundle, resolveBundle, resolveDescription } from '../../lib/descriptor/resolve.js';
import { DescriptionError } from '../../lib/descriptor/problem.js';
import { fixture } from './fixture.js';

const f = fixture();
f.write({
  'admin/vendor.xml': `<vse name="vendor">
  <os base="minimal">
    <packages><package name="openssh-server" locked="true"/><package name="vim"/><package name="nano"/></packages>
    <services><service name="ssh" state="enabled"/></services>
  </os>
  <vm memory="256M" vcpus="1" hypervisor="qemu" locked="hypervisor"/>
  <boot><option name="console" value="ttyS0" locked="true"/><option name="quiet"/></boot>
  <files><write path="/etc/motd">vendor</write><write path="/etc/issue">v</write></files>
</vse>`,
  'admin/site.xml': `<vse name="site" extends="vendor">
  <rte name="mpi"><package name="openmpi-bin"/><env name="OMPI_MCA_btl" value="self,tcp"/></rte>
  <files><write path="/etc/vse-site" locked="true">site</write></files>
  <resources><mount guest="/scratch" host="${f.dir}/data/scratch" mode="ro" locked="true"/></resources>
</vse>`,
  'project/project.xml': `<vse name="project" extends="site">
  <rte name="mpi"><env name="OMPI_MCA_pml" value="ob1"/></rte>
  <boot><option name="loglevel" value="4" after="console"/></boot>
  <build><step name="fetch">make fetch</step><step name="compile">make</step></build>
</vse>`,
  'user/user.xml': `<vse name="user" extends="../project/project.xml">
  <os><packages><package name="vim" action="remove"/><package name="htop"/></packages></os>
  <vm memory="1G" perNode="4"/>
  <boot><option name="debug" before="quiet"/></boot>
  <build><step name="install">make install</step><step name="fetch" after="compile">make fetch2</step></build>
  <files><edit path="/etc/motd"><append line="user"/></edit></files>
</vse>`,
});
mkdirSync(f.path('data/scratch'), { recursive: true });

const allowScratch = { ...f.site, allowedHostPaths: [{ path: f.path('data'), modes: ['ro' as const, 'rw' as const] }] };
const resolve = (rel: string, site = allowScratch) => resolveDescription(f.path(rel), site, { checkReadable: true });
const problems = (rel: string, site = allowScratch): string[] => resolve(rel, site).problems.map((p) => formatProblem(p).split(`${f.dir}/`).join(''));

describe('a four-layer hierarchy', () => {
  const r = resolve('user/user.xml');
  const d = r.description!;
  it('resolves, vendor and site trusted as admin layers, project and user not', () => {
    expect(r.problems.map(formatProblem)).toEqual([]);
    expect(r.layers.map((l) => [l.file.split(`${f.dir}/`)[1], l.admin])).toEqual([
      ['admin/vendor.xml', true], ['admin/site.xml', true], ['project/project.xml', false], ['user/user.xml', false],
    ]);
  });
  it('adds, overrides and removes list items by key', () => {
    expect(d.os.packages.map((p) => p.name)).toEqual(['openssh-server', 'nano', 'htop']);
  });
  it('overrides attributes one by one, keeping the rest', () => {
    expect(d.vm).toEqual({ memoryMiB: 1024, vcpus: 1, diskMiB: 1024, perNode: 4, hypervisor: 'qemu' });
  });
  it('merges a runtime environment across layers by its name', () => {
    expect(d.rtes).toEqual([{ name: 'mpi', packages: [{ name: 'openmpi-bin', state: 'present' }], env: [{ name: 'OMPI_MCA_btl', value: 'self,tcp' }, { name: 'OMPI_MCA_pml', value: 'ob1' }], paths: [] }]);
  });
  it('keeps inherited order in ordered lists, appends new items, and moves items with before/after', () => {
    expect(d.boot.map((b) => b.name)).toEqual(['console', 'loglevel', 'debug', 'quiet']);
    expect(d.build.map((b) => `${b.name}:${b.run}`)).toEqual(['compile:make', 'fetch:make fetch2', 'install:make install']);
  });
  it('replaces a file operation of another kind under the same path', () => {
    expect(d.files.map((x) => `${x.op} ${x.path}`)).toEqual(['edit /etc/motd', 'write /etc/issue', 'write /etc/vse-site']);
  });
  it('explains where every value came from and what it overrode', () => {
    const text = formatExplain(explain(r.tree!)).split(`${f.dir}/`).join('');
    expect(text).toMatch(/\/vse\/vm\/@memory = "1G"\s+user\/user.xml:3:7\n\s+overrides "256M" from admin\/vendor.xml:6:7 \(admin\)/);
    expect(text).toMatch(/\/vse\/os\/packages\/package\[vim\] removed\s+user\/user.xml:2:17/);
    expect(text).toMatch(/\/vse\/build\/step\[fetch\]\/text\(\) = "make fetch2"\s+user\/user.xml:5:50\n\s+overrides "make fetch" from project\/project.xml:4:10/);
  });
});

describe('extends', () => {
  it('refuses a cycle, showing the chain', () => {
    f.write({ 'cyc/a.xml': '<vse name="a" extends="./b.xml"><os base="minimal"/></vse>', 'cyc/b.xml': '<vse name="b" extends="a.xml"/>' });
    expect(problems('cyc/a.xml')).toEqual([`cyc/b.xml:1:15: /vse/@extends: extends forms a cycle: cyc/a.xml -> cyc/b.xml -> cyc/a.xml; expected a chain of bases that ends; hint: one of these files must not extend the others`]);
  });
  it('refuses a missing base name, with the names there are', () => {
    f.write({ 'miss.xml': '<vse name="m" extends="vendr"/>' });
    expect(problems('miss.xml')).toEqual(['miss.xml:1:15: /vse/@extends: no base description named "vendr"; expected one of site, vendor; hint: did you mean "vendor"?']);
  });
  it('refuses a missing base path', () => {
    f.write({ 'miss2.xml': '<vse name="m" extends="./nothere.xml"/>' });
    expect(problems('miss2.xml')).toEqual([`miss2.xml:1:15: /vse/@extends: cannot read the base nothere.xml: no such file; expected a readable XML file`]);
  });
  it('reports the problems of a base in the base file', () => {
    f.write({ 'badbase/base.xml': '<vse name="b"><vm memory="lots"/></vse>', 'badbase/top.xml': '<vse name="t" extends="base.xml"><os base="minimal"/></vse>' });
    expect(problems('badbase/top.xml')).toEqual(['badbase/base.xml:1:19: /vse/vm/@memory: "lots" is not valid; expected a size with a unit, such as 512M or 2G']);
  });
  it('says when there is nothing to remove', () => {
    f.write({ 'rm.xml': '<vse name="r" extends="vendor"><os><packages><package name="emacs" action="remove"/></packages></os></vse>' });
    expect(problems('rm.xml')).toEqual(['rm.xml:1:46: /vse/os/packages/package[emacs]: nothing named "emacs" to remove; expected an item inherited from a base description; hint: check the spelling, or drop the element']);
  });
});

describe('admin locks: no way around them', () => {
  const cases: { name: string; body: string; expected: RegExp }[] = [
    { name: 'removing a locked item', body: '<os><packages><package name="openssh-server" action="remove"/></packages></os>', expected: /^x\.xml:1:\d+: \/vse\/os\/packages\/package\[openssh-server\]: locked by the site administrator \(.*admin\/vendor\.xml:3\); it cannot be removed or replaced/ },
    { name: 'overriding a locked item', body: '<os><packages><package name="openssh-server" state="absent"/></packages></os>', expected: /\/vse\/os\/packages\/package\[openssh-server\]: locked by the site administrator .*; it cannot be changed/ },
    { name: 'overriding a locked attribute', body: '<vm hypervisor="libvirt"/>', expected: /^x\.xml:1:\d+: \/vse\/vm\/@hypervisor: attribute hypervisor locked by the site administrator .*vendor\.xml:6\); it cannot be changed; expected hypervisor as set by the site/ },
    { name: 'replacing the list that holds a locked item', body: '<os><packages replace="true"><package name="vim"/></packages></os>', expected: /package\[openssh-server\]: locked by the site administrator .*; it cannot be removed or replaced/ },
    { name: 'replacing the element that holds a locked attribute', body: '<vm replace="true" memory="512M"/>', expected: /\/vse\/vm\/@hypervisor: attribute hypervisor locked/ },
    { name: 'changing a locked boot option', body: '<boot><option name="console" value="tty0"/></boot>', expected: /\/vse\/boot\/option\[console\]: locked by the site administrator/ },
    { name: 're-adding a locked file under another key: deleting its directory', body: '<files><delete path="/etc"/></files>', expected: /\/vse\/files\/delete\[\/etc\]: <delete> of \/etc would change the locked \/etc\/vse-site \(locked by the site administrator at .*site\.xml:3\)/ },
    { name: 're-adding a locked mount under another key: same host path, writable', body: `<resources><mount guest="/mnt/s" host="${f.dir}/data/scratch" mode="rw"/></resources>`, expected: /\/vse\/resources\/mount\[\/mnt\/s\]\/@host: mount of .*data\/scratch overlaps the locked mount of .*data\/scratch/ },
    { name: 're-adding a locked mount under another key: shadowing its guest path', body: `<resources><mount guest="/scratch/sub" host="${f.dir}/data" mode="rw"/></resources>`, expected: /mount at \/scratch\/sub overlaps the locked mount at \/scratch/ },
    { name: 'a runtime environment removing a locked package', body: '<rte name="x"><package name="openssh-server" state="absent"/></rte>', expected: /\/vse\/rte\[x\]\/package\[openssh-server\]: runtime environment "x" makes package openssh-server absent, the site locked it present/ },
  ];
  it.each(cases)('$name', ({ body, expected }) => {
    f.write({ 'x.xml': `<vse name="x" extends="site">${body}</vse>` });
    const p = problems('x.xml');
    expect(p.length, p.join('\n')).toBeGreaterThan(0);
    expect(p.join('\n')).toMatch(expected);
  });

  it('re-adding a locked mount through a relative path or a symlink to the same host directory', () => {
    f.link('user/scratchlink', f.path('data/scratch'));
    f.write({ 'user/rel.xml': '<vse name="r" extends="site"><resources><mount guest="/w" host="../data/scratch" mode="rw"/></resources></vse>' });
    expect(problems('user/rel.xml').join('\n')).toMatch(/^user\/rel\.xml:1:\d+: \/vse\/resources\/mount\[\/w\]\/@host: mount of \.\.\/data\/scratch overlaps the locked mount of .*data\/scratch/);
    f.write({ 'user/sym.xml': '<vse name="s" extends="site"><resources><mount guest="/w" host="scratchlink" mode="rw"/></resources></vse>' });
    expect(problems('user/sym.xml').join('\n')).toMatch(/mount of scratchlink overlaps the locked mount of .*data\/scratch/);
  });

  it('points at the user\'s replace="true", not at the admin file', () => {
    f.write({ 'repl.xml': '<vse name="x" extends="site">\n<vm replace="true" memory="512M"/>\n</vse>' });
    expect(problems('repl.xml')[0]).toMatch(/^repl\.xml:2:1: \/vse\/vm\/@hypervisor: attribute hypervisor locked/);
    f.write({ 'repl2.xml': '<vse name="x" extends="site">\n<files replace="true"><write path="/a">x</write></files>\n</vse>' });
    expect(problems('repl2.xml')[0]).toMatch(/^repl2\.xml:2:1: \/vse\/files\/write\[\/etc\/vse-site\]: locked by the site administrator .*; it cannot be removed or replaced/);
  });

  it('overriding through a deeper extends chain of the user\'s own files fails the same way', () => {
    f.write({ 'deep/b1.xml': '<vse name="b1" extends="site"><vm hypervisor="libvirt"/></vse>', 'deep/b2.xml': '<vse name="b2" extends="b1.xml"/>', 'deep/top.xml': '<vse name="t" extends="b2.xml"/>' });
    expect(problems('deep/top.xml').join('\n')).toMatch(/^deep\/b1\.xml:1:\d+: \/vse\/vm\/@hypervisor: attribute hypervisor locked/);
  });

  it('a later admin layer may change an earlier admin layer\'s locked value', () => {
    f.write({ 'admin/site2.xml': '<vse name="site2" extends="vendor"><vm hypervisor="libvirt"/></vse>', 'ok2.xml': '<vse name="ok" extends="site2"/>' });
    expect(problems('ok2.xml')).toEqual([]);
    expect(resolve('ok2.xml').description?.vm.hypervisor).toBe('libvirt');
  });

  it('a locked list takes no additions', () => {
    f.write({ 'admin/frozen.xml': '<vse name="frozen"><os base="minimal"/><boot locked="true"><option name="quiet"/></boot></vse>', 'add.xml': '<vse name="a" extends="frozen"><boot><option name="debug"/></boot></vse>' });
    expect(problems('add.xml').join('\n')).toMatch(/^add\.xml:1:\d+: \/vse\/boot: locked by the site administrator .*frozen\.xml:1\); it cannot be changed/);
  });
});

describe('a site that requires its base', () => {
  it('refuses a description that does not build on it, and accepts one that does', () => {
    const site = { ...allowScratch, requiredBase: 'site' };
    f.write({ 'free.xml': '<vse name="free" extends="vendor"/>', 'bound.xml': '<vse name="b" extends="../project/project.xml"/>' });
    expect(problems('free.xml', site)).toEqual(['free.xml:1:18: /vse/@extends: the description does not extend the site\'s base "site"; expected extends="site" (directly or through your own bases); hint: this site requires every description to build on "site" (site policy /etc/vse/site.json)']);
    f.write({ 'project/bound.xml': '<vse name="b" extends="project.xml"/>' });
    expect(problems('project/bound.xml', site)).toEqual([]);
  });
});

describe('text and order details', () => {
  it('decodes the XML entities and character references, and refuses any other entity', () => {
    f.write({ 'ent.xml': '<vse name="e" extends="vendor"><build><step name="a">make &amp;&amp; make install &#65;&#x42;</step><step name="b"><![CDATA[x < y && z]]></step></build></vse>' });
    expect(resolve('ent.xml').description?.build.map((b) => b.run)).toEqual(['make && make install AB', 'x < y && z']);
    f.write({ 'ent2.xml': '<vse name="e" extends="vendor"><files><write path="/x">&nbsp;</write></files></vse>' });
    expect(problems('ent2.xml')).toEqual(['ent2.xml:1:39: /vse/files/write: unknown entity &nbsp; in the text of <write>; expected &amp; &lt; &gt; &quot; &apos; or a character reference such as &#65;; hint: or put the text in a <![CDATA[ ... ]]> section']);
  });
  it('places items with before/after in the layer that introduces the list too, and says when the anchor is missing', () => {
    f.write({ 'ord.xml': '<vse name="o"><os base="minimal"/><boot><option name="a"/><option name="b" before="a"/><option name="c" after="zz"/></boot></vse>' });
    const r = resolve('ord.xml');
    expect(r.problems.map((p) => formatProblem(p).split(`${f.dir}/`).join(''))).toEqual(['ord.xml:1:88: /vse/boot/option[c]: no item "zz" to place it after; expected one of b, a']);
  });
  it('normalises file modes and refuses impossible ones', () => {
    f.write({ 'mode.xml': '<vse name="m" extends="vendor"><files><write path="/a" mode="01777">x</write><write path="/b" mode="644">y</write></files></vse>' });
    expect(resolve('mode.xml').description?.files.filter((x) => x.path !== '/etc/motd' && x.path !== '/etc/issue').map((x) => (x as { mode?: string }).mode)).toEqual(['1777', '0644']);
    f.write({ 'mode2.xml': '<vse name="m" extends="vendor"><files><write path="/a" mode="17777">x</write></files></vse>' });
    expect(problems('mode2.xml')).toEqual(['mode2.xml:1:56: /vse/files/write[/a]/@mode: "17777" is not valid; expected an octal file mode such as 0644 (at most 07777)']);
  });
});

describe('what counts as an admin layer', () => {
  it('a lock in the user\'s own file has no effect, and the user is told', () => {
    f.write({ 'own/base.xml': '<vse name="b"><os base="minimal"/><vm memory="256M" locked="true"/></vse>', 'own/top.xml': '<vse name="t" extends="base.xml"><vm memory="512M"/></vse>' });
    const r = f.check('own/top.xml');
    expect(r.problems).toEqual([]);
    expect(r.description?.vm.memoryMiB).toBe(512);
    expect(r.warnings).toEqual(['own/base.xml:1:35: locked has no effect here: only layers in the admin directories can lock']);
  });
  it('a file in an admin directory that others can write is not trusted', () => {
    const g = fixture();
    g.write({ 'admin/loose.xml': '<vse name="loose"><os base="minimal"/><vm memory="256M" locked="true"/></vse>', 'u.xml': '<vse name="u" extends="loose"><vm memory="512M"/></vse>' });
    chmodSync(g.path('admin/loose.xml'), 0o666);
    const r = g.check('u.xml');
    expect(r.problems).toEqual([]);
    expect(r.warnings[0]).toBe('admin/loose.xml: not trusted as an admin layer (admin/loose.xml is writable by others than root); its locks are ignored');
  });
  it('a file in an admin directory that a user owns is not trusted', () => {
    const g = fixture();
    g.write({ 'admin/mine.xml': '<vse name="mine"><os base="minimal"/><vm memory="256M" locked="true"/></vse>', 'u.xml': '<vse name="u" extends="mine"><vm memory="512M"/></vse>' });
    chownSync(g.path('admin/mine.xml'), 65534, 65534);
    expect(g.check('u.xml').warnings[0]).toMatch(/admin\/mine\.xml is not owned by root/);
  });
});

describe('the job\'s copy (bundle) checked again on the node', () => {
  it('carries the user\'s layers, not the admin ones, and resolves the same', () => {
    const r = resolve('user/user.xml');
    const b = makeBundle(r);
    expect(b.layers.map((l) => l.path.split(`${f.dir}/`)[1])).toEqual(['project/project.xml', 'user/user.xml']);
    expect(resolveBundle(JSON.stringify(b), 'job', allowScratch, false)).toEqual(r.description);
  });
  it('is fixed at submission: a later edit of the file changes nothing', () => {
    f.write({ 'edit.xml': '<vse name="e" extends="site"><vm memory="512M"/></vse>' });
    const b = JSON.stringify(makeBundle(resolve('edit.xml')));
    f.write({ 'edit.xml': '<vse name="e" extends="site"><vm memory="2G"/></vse>' });
    expect(resolveBundle(b, 'job', allowScratch, false).vm.memoryMiB).toBe(512);
  });
  it('enforces this node\'s admin locks even on a forged copy', () => {
    f.write({ 'forge.xml': '<vse name="e" extends="site"/>' });
    const b = makeBundle(resolve('forge.xml'));
    b.layers[0]!.text = '<vse name="e" extends="site"><vm hypervisor="libvirt"/></vse>';
    expect(() => resolveBundle(JSON.stringify(b), 'job', allowScratch)).toThrow(DescriptionError);
    expect(() => resolveBundle(JSON.stringify(b), 'job', allowScratch)).toThrow(/hypervisor locked by the site administrator/);
  });
  it('refuses a layer that is neither in the copy nor an admin base here', () => {
    const b = { v: 1, file: f.path('user/user.xml'), layers: [{ path: f.path('user/user.xml'), text: '<vse name="u" extends="../project/project.xml"/>' }] };
    expect(() => resolveBundle(JSON.stringify(b), 'job', allowScratch)).toThrow(/project\.xml is not in the job's description \(and is not an admin base on this node\)/);
  });
  it('refuses what is not a bundle', () => {
    expect(() => resolveBundle('{"name":"x"}', 'job', allowScratch)).toThrow("job: the job's description cannot be read: not a vse description bundle (v1)");
  });
});

describe('site policy on the merged result', () => {
  const mount = (host: string, mode = 'ro'): string => `<vse name="m" extends="vendor"><resources><mount guest="/data" host="${host}" mode="${mode}"/></resources></vse>`;
  const g = fixture({ allowedHostPaths: [] });
  g.write({ 'admin/vendor.xml': '<vse name="vendor"><os base="minimal"/></vse>' });
  mkdirSync(g.path('allowed/sub'), { recursive: true });
  mkdirSync(g.path('secret'), { recursive: true });
  g.link('allowed/escape', g.path('secret'));
  const site = { ...g.site, allowedHostPaths: [{ path: g.path('allowed'), modes: ['ro' as const] }] };
  const check = (xml: string): string[] => {
    writeFileSync(g.path('m.xml'), xml);
    return resolveDescription(g.path('m.xml'), site).problems.map((p) => formatProblem(p).split(`${g.dir}/`).join(''));
  };
  it('allows a host path under an allowed one', () => {
    expect(check(mount(g.path('allowed/sub')))).toEqual([]);
  });
  it.each([
    ['outside the allowlist', () => g.path('secret'), 'ro', /host path secret is outside the host paths the site allows; expected a path under .*allowed \(ro\)/],
    ['.. out of an allowed path', () => `${g.path('allowed')}/../secret`, 'ro', /host path secret is outside the host paths the site allows/],
    ['a symlink in an allowed path leading out', () => g.path('allowed/escape'), 'ro', /host path allowed\/escape \(which leads to secret\) is outside the host paths the site allows/],
    ['writable where only reading is allowed', () => g.path('allowed/sub'), 'rw', /host path allowed\/sub may not be writable; expected mode ro/],
    ['a path that does not exist', () => g.path('allowed/none'), 'ro', /host path allowed\/none does not exist/],
  ])('refuses %s', (_name, host, mode, expected) => {
    const p = check(mount(host(), mode));
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(/^m\.xml:1:\d+: \/vse\/resources\/mount\[\/data\]\/@host: /);
    expect(p[0]).toMatch(expected);
  });
  it('refuses more memory per node than the site allows, whichever layers add up to it', () => {
    g.write({ 'admin/big.xml': '<vse name="big" extends="vendor"><vm memory="4G"/></vse>', 'sum.xml': '<vse name="s" extends="big"><vm perNode="5"/></vse>' });
    expect(resolveDescription(g.path('sum.xml'), site).problems.map(formatProblem).map((s) => s.split(`${g.dir}/`).join(''))).toEqual([
      'sum.xml:1:33: /vse/vm/@perNode: memory per node 20G (5 x 4G) exceeds the site limit; expected at most 16G; hint: limit set by the site policy (/etc/vse/site.json); fewer or smaller VMs per node',
    ]);
  });
  it('refuses a hypervisor the site does not allow', () => {
    const p = resolveDescription(g.path('m.xml'), { ...site, allowedHypervisors: ['qemu'] });
    writeFileSync(g.path('m.xml'), '<vse name="m" extends="vendor"><vm hypervisor="libvirt"/></vse>');
    const q = resolveDescription(g.path('m.xml'), { ...site, allowedHypervisors: ['qemu'] });
    expect(p).toBeDefined();
    expect(q.problems.map(formatProblem)[0]).toMatch(/\/vse\/vm\/@hypervisor: hypervisor libvirt is not allowed here; expected one of qemu, any/);
  });
  it('uses no admin directory it cannot trust for names', () => {
    expect(join(g.admin)).toBe(g.path('admin'));
  });
});
