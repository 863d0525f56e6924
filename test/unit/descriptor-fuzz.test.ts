/**
 * Fuzzing the description reader: thousands of random mutations of valid layered descriptions
 * (byte flips, chunk edits, random tags, attributes, entities, DOCTYPEs, huge numbers, unicode,
 * NUL, invalid UTF-8, truncation, deep nesting, broken `extends`, directives) are resolved with
 * `resolveDescription`. Nothing may throw; every refusal must be a located, structured problem.
 *
 * Deterministic: the seed is printed; VSE_FUZZ_SEED=n replays a run, VSE_FUZZ_CASES=n changes the
 * number of mutants, VSE_FUZZ_ONLY=i runs (and prints) case i of that seed alone.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Problem, formatProblem } from '../../lib/descriptor/problem.js';
import { type Resolution, resolveDescription } from '../../lib/descriptor/resolve.js';
import { DIRECTIVES, VOCABULARY } from '../../lib/descriptor/vocabulary.js';
import type { SiteConfig } from '../../lib/site/config.js';

const DEFAULT_SEED = 0x5eed_2024;
const envNumber = (name: string): number | undefined => {
  const v = process.env[name];
  if (v === undefined || v.trim() === '') return undefined;
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`${name}=${v}: expected a whole number`);
  return n;
};
const SEED = (envNumber('VSE_FUZZ_SEED') ?? DEFAULT_SEED) >>> 0;
const CASES = envNumber('VSE_FUZZ_CASES') ?? 2400;
const ONLY = envNumber('VSE_FUZZ_ONLY');

// ---------------------------------------------------------------------------------------------
// A small seeded PRNG (mulberry32); each case gets its own stream, so any case replays alone.

type Rng = () => number;
function mulberry32(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const caseRng = (seed: number, i: number): Rng => mulberry32(Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(i + 1, 0xc2b2ae35));
const int = (r: Rng, n: number): number => Math.floor(r() * n);
const pick = <T>(r: Rng, xs: readonly T[]): T => xs[int(r, xs.length)] as T;
/** Mostly small lengths, sometimes large. */
const len = (r: Rng, max: number): number => Math.max(1, Math.min(max, Math.floor(Math.exp(r() * Math.log(max + 1)))));

// ---------------------------------------------------------------------------------------------
// The layout: an admin directory with the site base, a project directory with the user's files.

let tmp = '';
let admin = '';
let proj = '';
let data = '';
let site: SiteConfig;
const HERE = '@DIR@'; // replaced by the temp dir in the texts below

const ADMIN_BASE = `<?xml version="1.0" encoding="UTF-8"?>
<!-- fuzz: the site's base (admin layer) -->
<vse name="fuzzbase">
  <os base="minimal" release="bookworm" variant="minbase">
    <kernel package="linux-image-cloud-amd64"/>
    <packages>
      <package name="openssh-server"/>
      <package name="telnetd" state="absent" locked="true"/>
      <package name="curl"/>
    </packages>
    <services>
      <service name="ssh" state="enabled"/>
      <service name="cron" state="disabled"/>
    </services>
  </os>
  <rte name="mpi">
    <package name="openmpi-bin"/>
    <env name="OMPI_MCA_btl" value="self,tcp"/>
    <path dir="/opt/mpi/bin"/>
  </rte>
  <files>
    <write path="/etc/motd" mode="0644">site base</write>
    <edit path="/etc/ssh/sshd_config" locked="true">
      <set key="PermitRootLogin" value="no" separator=" "/>
    </edit>
    <link path="/usr/local/bin/mpirun" target="/opt/mpi/bin/mpirun"/>
  </files>
  <build>
    <step name="base-setup">echo base</step>
    <step name="base-finish" mode="online" workdir="/root">echo done</step>
  </build>
  <boot>
    <option name="console" value="ttyS0"/>
    <option name="quiet"/>
  </boot>
  <vm memory="256M" vcpus="1" disk="2G" perNode="1" hypervisor="qemu" locked="hypervisor"/>
  <resources>
    <network mode="private" locked="true"/>
    <mount guest="/scratch" host="${HERE}/data" mode="rw"/>
  </resources>
</vse>
`;

/** The project layer between the site base and seed C. */
const SIBLING = `<vse name="project" extends="fuzzbase">
  <os>
    <packages><package name="htop"/></packages>
  </os>
  <files>
    <write path="/etc/project">project</write>
  </files>
  <boot replace="true">
    <option name="console" value="ttyS0"/>
  </boot>
  <vm memory="384M"/>
</vse>
`;

const SEEDS: Record<string, string> = {
  // every element, no base
  A: `<?xml version="1.0" encoding="UTF-8"?>
<!-- fuzz seed A: standalone -->
<vse name="seed-a">
  <os base="minimal">
    <kernel path="${HERE}/data/vmlinuz"/>
    <packages>
      <package name="bash"/>
      <package name="vim-tiny" state="present"/>
      <package name="nano" state="absent"/>
    </packages>
    <services>
      <service name="ssh" state="enabled"/>
    </services>
  </os>
  <rte name="blas">
    <package name="libopenblas0"/>
    <env name="OPENBLAS_NUM_THREADS" value="1"/>
    <env name="LD_LIBRARY_PATH" value="/opt/blas/lib:$LD_LIBRARY_PATH"/>
    <path dir="/opt/blas/bin"/>
    <path dir="/opt/tools/bin"/>
  </rte>
  <files>
    <import path="/opt/app/app.conf" from="${HERE}/data/app.conf" mode="0640"/>
    <import path="/opt/app/rel.conf" from="app.conf"/>
    <copy path="/etc/skel/app.conf" from="/opt/app/app.conf"/>
    <link path="/usr/bin/app" target="/opt/app/bin/app"/>
    <delete path="/etc/issue"/>
    <edit path="/etc/default/grub">
      <set key="GRUB_TIMEOUT" value="0"/>
      <replace pattern="^#?(\\w+)=old$" with="$1=new"/>
      <append line="# edited by vse"/>
    </edit>
    <write path="/etc/app/config.ini" mode="0600">[main]
threads = 4 &amp; more</write>
  </files>
  <build>
    <step name="fetch" mode="online" workdir="/opt/app">curl -fsS https://example.invalid/app.tgz -o app.tgz</step>
    <step name="compile">make -C /opt/app &amp;&amp; make -C /opt/app install</step>
  </build>
  <boot>
    <option name="console" value="ttyS0"/>
    <option name="panic" value="-1"/>
    <option name="quiet"/>
  </boot>
  <vm memory="512M" vcpus="2" disk="4G" perNode="2" hypervisor="qemu"/>
  <resources>
    <mount guest="/data" host="${HERE}/data" mode="ro"/>
    <mount guest="/ro" host="${HERE}/ro"/>
    <network mode="private"/>
  </resources>
</vse>
`,
  // on the admin base: overrides, removals, before/after
  B: `<vse name="seed-b" extends="fuzzbase">
  <os>
    <packages>
      <package name="curl" action="remove"/>
      <package name="git"/>
    </packages>
    <services>
      <service name="cron" state="enabled"/>
    </services>
  </os>
  <rte name="mpi">
    <env name="OMPI_MCA_btl" value="self,vader"/>
    <path dir="/opt/mpi/extra/bin"/>
  </rte>
  <rte name="python">
    <package name="python3"/>
    <env name="PYTHONUNBUFFERED" value="1"/>
  </rte>
  <files>
    <write path="/etc/motd" mode="0644">project motd</write>
    <write path="/etc/banner" before="/etc/motd">hi</write>
    <link path="/usr/local/bin/mpirun" action="remove"/>
    <delete path="/tmp/junk" after="/etc/motd"/>
  </files>
  <build>
    <step name="app" after="base-setup">echo app</step>
    <step name="base-finish" action="remove"/>
  </build>
  <boot>
    <option name="quiet" action="remove"/>
    <option name="loglevel" value="3" before="console"/>
  </boot>
  <vm memory="1G" vcpus="4"/>
  <resources>
    <mount guest="/scratch" host="${HERE}/data" mode="ro"/>
  </resources>
</vse>
`,
  // three layers: user -> ./sibling.xml -> fuzzbase; replace, a (powerless) lock
  C: `<vse name="seed-c" extends="./sibling.xml">
  <os><packages><package name="htop" action="remove"/></packages></os>
  <files>
    <write path="/etc/project" replace="true" mode="0600">user</write>
    <edit path="/etc/hosts"><append line="10.0.0.1 head"/></edit>
  </files>
  <build><step name="user" before="base-setup">echo user</step></build>
  <vm perNode="3" locked="true"/>
  <resources><mount guest="/home/u" host="${HERE}/data/home" mode="rw"/></resources>
</vse>
`,
  // compact, CDATA, comments, replace on a list
  D: `<?xml version="1.0"?>
<vse name="seed-d" extends="fuzzbase"><!-- compact -->
<os base="minimal"><kernel package="linux-image-amd64"/><services replace="true"><service name="getty" state="disabled"/></services></os>
<rte name="tools"><package name="strace"/><path dir="/usr/local/sbin"/><env name="TERM" value="xterm-256color"/></rte>
<files><write path="/etc/cdata"><![CDATA[<not> & parsed]]></write><copy path="/root/.profile" from="/etc/profile"/></files>
<build><step name="one">true</step><step name="two" mode="offline">echo "two" &gt; /tmp/two</step></build>
<boot><option name="init" value="/sbin/init" after="quiet"/></boot>
<vm memory="2G" vcpus="8" disk="8G" perNode="4"/>
<resources><mount guest="/ro" host="${HERE}/ro" mode="ro"/></resources>
</vse>
`,
};

// ---------------------------------------------------------------------------------------------
// Dictionaries, taken from the vocabulary where possible so that they follow the language.

const ELEMENTS = [...Object.keys(VOCABULARY), 'packages', 'services', 'files', 'build', 'boot'];
const ATTRS = [...new Set(Object.values(VOCABULARY).flatMap((s) => Object.keys(s.attrs)))];
const DIRECTIVE_NAMES = Object.keys(DIRECTIVES);
const ODD_NAMES = ['constructor', '__proto__', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', 'xmlns', 'xml:lang', 'a:b', 'x'.repeat(300), 'VSE', 'Os', 'Name', '_', 'a-b.c'];
let VALUES: string[] = []; // every attribute value of the seeds, plus the odd ones below
const ODD_VALUES = [
  '', ' ', '0', '-1', '1', '00', '007', '1.5', '1e3', '1e400', 'NaN', 'Infinity', '-0', '0x10',
  '99999999999999999999999', '18446744073709551617', '9007199254740993', '4294967296', '1'.repeat(400),
  '0M', '95M', '96M', '1M', '1K', '1T', '1P', '1048577M', '16777217M', '99999999999G', '-5G', '1.5G', '2g', '2GiB',
  '/', '//', '/..', '/../..', '/a/./b/../c', '/etc/shadow', '../../etc/passwd', 'relative/path', '~', '.', '..',
  '$HOME', '`id`', '$(reboot)', ';rm -rf /', 'a b', 'a\tb', 'a&#10;b', '&amp;', '&lt;&gt;', '&quot;', '&#0;', '&#x110000;', '&foo;',
  '(', '[', '*', '(?<a>x)\\k<a>', '\\', '(a+)+$', 'true', 'false', 'remove', 'yes', 'TRUE',
  'minimal', 'debian', 'present', 'absent', 'enabled', 'disabled', 'offline', 'online', 'ro', 'rw', 'private', 'none',
  'qemu', 'libvirt', 'any', 'kvm', '0644', '7777', '0999', '644', '10644', 'memory hypervisor', 'vcpus', 'bogus',
  'ünïcödé', '日本語', '🦀', '\u202Eevil', 'zero\u200Bwidth', '\uFEFFbom', 'é'.repeat(70), 'a'.repeat(64), 'a'.repeat(5000),
  'fuzzbase', 'fuzzbse', 'nonexistent', './sibling.xml', 'sibling.xml', './u.xml', './cycle1.xml', './deep0.xml',
  '../admin/fuzzbase.xml', './missing.xml', './', '../data', '/etc/hostname', '/proc/self/status',
];
const ENTITIES = ['&amp;', '&lt;', '&gt;', '&quot;', '&apos;', '&#65;', '&#x41;', '&#0;', '&#x0;', '&#x110000;', '&#xD800;', '&#99999999999;', '&foo;', '&nbsp;', '&', '&#;', '&#x;', '&amp', '&lt;script&gt;'];
const DECLS = [
  '<!DOCTYPE vse [<!ENTITY x "y">]>', '<!DOCTYPE vse SYSTEM "file:///etc/passwd">', '<!doctype html>', '<!ENTITY x SYSTEM "http://example.invalid/">',
  '<!DOCTYPE vse [<!ENTITY a "&a;&a;&a;&a;">]>', '<?xml version="1.0" encoding="ISO-8859-1"?>', '<?xml version="1.1"?>', '<?xml-stylesheet href="x"?>',
  '<?pi?>', '<![CDATA[ x ]]>', '<![CDATA[', ']]>', '<!-- comment -->', '<!-- a -- b -->', '<!--', '-->', '<!', '<?', '<!ELEMENT vse ANY>', '<!ATTLIST vse name CDATA "x">',
];
const UNICODE = [
  '\u00e9', '\u00df', '\u4e2d\u6587', '\u{1F980}', '\u{1F468}\u200D\u{1F469}', '\u202E', '\u202D', '\u200B', '\u200D', '\uFEFF', '\u0301', 'e\u0301',
  '\uE000', '\uFFFE', '\uFFFF', '\u{10FFFF}', '\uD800', '\uDFFF', '\u0001', '\u001B[31m', '\u007F', '\u0085', '\u2028', '\u2029', '\u00A0', '\u3000',
  '\u0130', '\u017F', '\u212A', '\uFF1C', '\uFE64', '\u2044',
];
const INVALID_UTF8 = [[0xff], [0xfe], [0xc3, 0x28], [0xe2, 0x82], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xc0, 0xbc], [0x80], [0xef, 0xbf, 0xbd]];
const HUGE = ['99999999999999999999', '1e400', '18446744073709551617', '-0', '007', '1'.repeat(400), '0x7fffffff', '4294967296', '2147483648', '-2147483649', '1.0000000000000002'];
const NEST = [5, 30, 31, 32, 33, 34, 50, 99, 100, 101, 150, 1000, 20000];

const xmlEscape = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');

// ---------------------------------------------------------------------------------------------
// Mutation operators. Each takes the bytes and returns new bytes; string operators decode UTF-8.

type Op = (b: Buffer, r: Rng) => Buffer;
const S = (f: (s: string, r: Rng) => string): Op => (b, r) => Buffer.from(f(b.toString('utf8'), r), 'utf8');
const at = (s: string, i: number, ins: string): string => s.slice(0, i) + ins + s.slice(i);
/** A position: mostly a tag boundary (after '>' or before '<'), sometimes any offset. */
function spot(s: string, r: Rng): number {
  if (r() < 0.25 || s.length === 0) return int(r, s.length + 1);
  const ends = [...s.matchAll(/>/g)].map((m) => (m.index ?? 0) + 1);
  return ends.length ? pick(r, ends) : int(r, s.length + 1);
}
const randomName = (r: Rng): string => (r() < 0.85 ? pick(r, ELEMENTS) : pick(r, ODD_NAMES));
const randomAttrName = (r: Rng): string => {
  const x = r();
  return x < 0.6 ? pick(r, ATTRS) : x < 0.9 ? pick(r, DIRECTIVE_NAMES) : pick(r, ODD_NAMES);
};
const randomValue = (r: Rng): string => {
  const v = r() < 0.5 ? pick(r, VALUES) : pick(r, ODD_VALUES);
  return r() < 0.85 ? xmlEscape(v) : v; // sometimes raw: quotes and '<' break the XML
};
const randomAttrs = (r: Rng): string => Array.from({ length: int(r, 4) }, () => ` ${randomAttrName(r)}="${randomValue(r)}"`).join('');
function randomTag(r: Rng, depth = 0): string {
  const name = randomName(r);
  const x = r();
  if (x < 0.45) return `<${name}${randomAttrs(r)}/>`;
  if (x < 0.55) return `<${name}${randomAttrs(r)}>`; // unclosed
  if (x < 0.6) return `</${name}>`; // stray close
  const inner = depth < 2 && r() < 0.5 ? Array.from({ length: 1 + int(r, 3) }, () => randomTag(r, depth + 1)).join('') : xmlEscape(pick(r, VALUES));
  return `<${name}${randomAttrs(r)}>${inner}</${name}>`;
}
const attrSpans = (s: string): RegExpExecArray[] => [...s.matchAll(/\s([\w:.-]+)\s*=\s*"([^"]*)"/g)];
const lineSpans = (s: string): [number, number][] => {
  const out: [number, number][] = [];
  let i = 0;
  for (const line of s.split('\n')) {
    out.push([i, i + line.length + 1]);
    i += line.length + 1;
  }
  return out;
};
const chunk = (n: number, r: Rng): [number, number] => {
  const a = int(r, n + 1);
  return [a, Math.min(n, a + len(r, 64))];
};

const OPS: Record<string, { w: number; op: Op }> = {
  flipByte: { w: 6, op: (b, r) => {
    const c = Buffer.from(b);
    if (c.length === 0) return c;
    const i = int(r, c.length);
    c[i] = r() < 0.5 ? (c[i] as number) ^ (1 << int(r, 8)) : int(r, 256);
    return c;
  } },
  flipPrintable: { w: 4, op: (b, r) => {
    const c = Buffer.from(b);
    if (c.length) c[int(r, c.length)] = pick(r, [...Buffer.from('<>/="\'&;! ?-[]x0\n\t')]);
    return c;
  } },
  nul: { w: 2, op: (b, r) => {
    const i = int(r, b.length + 1);
    return Buffer.concat([b.subarray(0, i), Buffer.from([0]), b.subarray(i)]);
  } },
  invalidUtf8: { w: 2, op: (b, r) => {
    const i = int(r, b.length + 1);
    return Buffer.concat([b.subarray(0, i), Buffer.from(pick(r, INVALID_UTF8)), b.subarray(i)]);
  } },
  truncate: { w: 4, op: (b, r) => b.subarray(0, int(r, b.length)) },
  deleteChunk: { w: 6, op: (b, r) => {
    const [x, y] = chunk(b.length, r);
    return Buffer.concat([b.subarray(0, x), b.subarray(y)]);
  } },
  duplicateChunk: { w: 4, op: (b, r) => {
    const [x, y] = chunk(b.length, r);
    const to = int(r, b.length + 1);
    return Buffer.concat([b.subarray(0, to), b.subarray(x, y), b.subarray(to)]);
  } },
  swapChunks: { w: 3, op: (b, r) => {
    const [x1, y1] = chunk(b.length, r);
    const [x2, y2] = chunk(b.length, r);
    const [a, c] = x1 <= x2 ? [[x1, y1], [x2, y2]] : [[x2, y2], [x1, y1]];
    if ((a[1] as number) > (c[0] as number)) return b;
    return Buffer.concat([b.subarray(0, a[0]), b.subarray(c[0], c[1]), b.subarray(a[1], c[0]), b.subarray(a[0], a[1]), b.subarray(c[1])]);
  } },
  deleteLine: { w: 6, op: S((s, r) => {
    const [x, y] = pick(r, lineSpans(s));
    return s.slice(0, x) + s.slice(y);
  }) },
  duplicateLine: { w: 6, op: S((s, r) => {
    const [x, y] = pick(r, lineSpans(s));
    return at(s, pick(r, lineSpans(s))[0], s.slice(x, y));
  }) },
  swapLines: { w: 3, op: S((s, r) => {
    const lines = s.split('\n');
    const i = int(r, lines.length);
    const j = int(r, lines.length);
    [lines[i], lines[j]] = [lines[j] as string, lines[i] as string];
    return lines.join('\n');
  }) },
  insertTag: { w: 10, op: S((s, r) => at(s, spot(s, r), randomTag(r))) },
  insertAttr: { w: 8, op: S((s, r) => {
    const opens = [...s.matchAll(/<([A-Za-z_][\w:.-]*)/g)];
    if (!opens.length) return s;
    const m = pick(r, opens);
    return at(s, (m.index ?? 0) + m[0].length, ` ${randomAttrName(r)}="${randomValue(r)}"`);
  }) },
  setValue: { w: 12, op: S((s, r) => {
    const spans = attrSpans(s);
    if (!spans.length) return s;
    const m = pick(r, spans);
    const vStart = (m.index ?? 0) + m[0].length - 1 - (m[2] as string).length;
    return s.slice(0, vStart) + randomValue(r) + s.slice(vStart + (m[2] as string).length);
  }) },
  removeAttr: { w: 5, op: S((s, r) => {
    const spans = attrSpans(s);
    if (!spans.length) return s;
    const m = pick(r, spans);
    return s.slice(0, m.index) + s.slice((m.index ?? 0) + m[0].length);
  }) },
  renameElement: { w: 5, op: S((s, r) => {
    const tags = [...s.matchAll(/<\/?([A-Za-z_][\w:.-]*)/g)];
    if (!tags.length) return s;
    const m = pick(r, tags);
    const nameAt = (m.index ?? 0) + m[0].length - (m[1] as string).length;
    const name = randomName(r);
    if (r() < 0.5) return s.slice(0, nameAt) + name + s.slice(nameAt + (m[1] as string).length); // one tag only
    return s.replace(new RegExp(`(</?)${m[1]}(?=[\\s/>])`, 'g'), `$1${name}`); // every tag of that name
  }) },
  directive: { w: 10, op: S((s, r) => {
    const opens = [...s.matchAll(/<([A-Za-z_][\w:.-]*)/g)].filter((m) => m[1] !== 'vse' || r() < 0.1);
    if (!opens.length) return s;
    const m = pick(r, opens);
    const d = pick(r, DIRECTIVE_NAMES);
    const v = d === 'action' ? pick(r, ['remove', 'remove', 'add', '']) : d === 'replace' || d === 'locked' ? pick(r, ['true', 'true', 'false', pick(r, ATTRS), 'maybe']) : pick(r, VALUES);
    return at(s, (m.index ?? 0) + m[0].length, ` ${d}="${xmlEscape(v)}"`);
  }) },
  extends: { w: 6, op: S((s, r) => {
    const v = xmlEscape(pick(r, ['fuzzbase', 'fuzzbse', 'nonexistent', './sibling.xml', 'sibling.xml', './u.xml', './cycle1.xml', './deep0.xml', '../admin/fuzzbase.xml',
      './missing.xml', './', '../data', '../data/app.conf', '/etc/hostname', '', ' ', 'a b', '..', '/', 'fuzzbase.xml', '../admin', `${tmp}/admin/fuzzbase.xml`, 'FUZZBASE', 'fuzzbase ']));
    if (/extends="[^"]*"/.test(s)) return s.replace(/extends="[^"]*"/, `extends="${v}"`);
    return s.replace(/<vse\b/, `<vse extends="${v}"`);
  }) },
  entity: { w: 5, op: S((s, r) => at(s, r() < 0.5 ? spot(s, r) : int(r, s.length + 1), pick(r, ENTITIES))) },
  declaration: { w: 4, op: S((s, r) => at(s, r() < 0.4 ? 0 : spot(s, r), pick(r, DECLS))) },
  hugeNumber: { w: 4, op: S((s, r) => {
    const nums = [...s.matchAll(/\d+/g)];
    if (!nums.length) return s;
    const m = pick(r, nums);
    return s.slice(0, m.index) + pick(r, HUGE) + s.slice((m.index ?? 0) + m[0].length);
  }) },
  unicode: { w: 6, op: S((s, r) => at(s, r() < 0.5 ? int(r, s.length + 1) : spot(s, r), Array.from({ length: len(r, 8) }, () => pick(r, UNICODE)).join(''))) },
  unicodeName: { w: 2, op: S((s, r) => {
    const tags = [...s.matchAll(/<([A-Za-z_][\w:.-]*)/g)];
    if (!tags.length) return s;
    const m = pick(r, tags);
    return at(s, (m.index ?? 0) + m[0].length, pick(r, ['\u00e9', '\u4e2d', '\u0130', '\u212A', '\u{1F980}', '-', '.', ':']));
  }) },
  deepNesting: { w: 4, op: S((s, r) => {
    const n = pick(r, NEST);
    const name = pick(r, ['a', 'vse', 'files', 'edit', 'os', 'rte', pick(r, ELEMENTS)]);
    const i = spot(s, r);
    return at(s, i, `<${name}>`.repeat(n) + (r() < 0.9 ? `</${name}>`.repeat(n) : ''));
  }) },
  whitespace: { w: 2, op: S((s, r) => {
    const x = r();
    if (x < 0.3) return s.replace(/\n/g, '\r\n');
    if (x < 0.5) return `\uFEFF${s}`;
    if (x < 0.7) return `${' \t\n'.repeat(len(r, 200))}${s}`;
    return s.replace(/ /g, () => pick(r, [' ', '  ', '\t', '\n', '\r', '\u00A0']));
  }) },
  bigText: { w: 0.4, op: S((s, r) => {
    const size = pick(r, [70_000, 600_000, 1024 * 1024 - s.length, 1024 * 1024 + 1]);
    const i = s.lastIndexOf('</write>');
    return i >= 0 && r() < 0.7 ? at(s, i, 'x'.repeat(Math.max(0, size))) : at(s, s.length, ' '.repeat(Math.max(0, size)));
  }) },
  manyItems: { w: 1, op: S((s, r) => {
    const n = pick(r, [50, 500, 3000]);
    const i = s.indexOf('<packages>');
    const items = Array.from({ length: n }, (_, k) => `<package name="p${k}"/>`).join('');
    return i >= 0 ? at(s, i + '<packages>'.length, items) : at(s, spot(s, r), `<packages>${items}</packages>`);
  }) },
};
const OP_NAMES = Object.keys(OPS);
const TOTAL_W = OP_NAMES.reduce((a, k) => a + (OPS[k] as { w: number }).w, 0);
function pickOp(r: Rng): string {
  let x = r() * TOTAL_W;
  for (const k of OP_NAMES) {
    x -= (OPS[k] as { w: number }).w;
    if (x < 0) return k;
  }
  return OP_NAMES[0] as string;
}

// ---------------------------------------------------------------------------------------------

interface Case {
  seed: string;
  target: 'user' | 'sibling' | 'admin';
  ops: string[];
  bytes: Buffer;
  checkReadable: boolean;
}

function makeCase(i: number): Case {
  const r = caseRng(SEED, i);
  const seed = pick(r, Object.keys(SEEDS));
  const x = r();
  const target = seed === 'C' && x < 0.15 ? 'sibling' : x > 0.95 ? 'admin' : 'user';
  const start = target === 'sibling' ? SIBLING : target === 'admin' ? ADMIN_BASE : (SEEDS[seed] as string);
  let bytes: Buffer = Buffer.from(start.split(HERE).join(tmp), 'utf8');
  const ops: string[] = [];
  const n = 1 + (r() < 0.5 ? 0 : r() < 0.6 ? 1 : 1 + int(r, 4)); // mostly 1 or 2 operators, sometimes up to 5
  for (let k = 0; k < n; k++) {
    const name = pickOp(r);
    ops.push(name);
    bytes = (OPS[name] as { op: Op }).op(bytes, r);
  }
  return { seed, target, ops, bytes, checkReadable: r() < 0.3 };
}

const isStructured = (p: Problem): string | undefined => {
  if (typeof p.file !== 'string' || p.file === '') return 'empty file';
  if (!Number.isInteger(p.line) || p.line < 1) return `line ${p.line}`;
  if (!Number.isInteger(p.col) || p.col < 1) return `col ${p.col}`;
  if (typeof p.path !== 'string' || !p.path.startsWith('/')) return `path ${JSON.stringify(p.path)}`;
  if (typeof p.message !== 'string' || p.message.trim() === '') return 'empty message';
  const f = formatProblem(p);
  // one problem, one line: a value echoed in a path or message must not break it (\n, U+2028, ...)
  if (/[\n\r\u0085\u2028\u2029]/.test(f)) return 'formatProblem spans several lines';
  if (!/^.+:\d+:\d+: \/.*: .+/.test(f)) return 'formatProblem does not match file:line:col: /path: message';
  return undefined;
};

/** Write the case's files, resolve the user's file, put the shared files back. */
function runCase(c: Case): Resolution {
  const user = join(proj, 'u.xml');
  const seedText = (SEEDS[c.seed] as string).split(HERE).join(tmp);
  writeFileSync(user, c.target === 'user' ? c.bytes : seedText);
  if (c.target === 'sibling') writeFileSync(join(proj, 'sibling.xml'), c.bytes);
  if (c.target === 'admin') writeFileSync(join(admin, 'fuzzbase.xml'), c.bytes);
  try {
    return resolveDescription(user, site, { checkReadable: c.checkReadable });
  } finally {
    if (c.target === 'sibling') writeFileSync(join(proj, 'sibling.xml'), SIBLING);
    if (c.target === 'admin') writeFileSync(join(admin, 'fuzzbase.xml'), ADMIN_BASE.split(HERE).join(tmp));
  }
}

const show = (b: Buffer): string => {
  const s = JSON.stringify(b.toString('utf8'));
  return s.length > 600 ? `${s.slice(0, 600)}... (${b.length} bytes)` : s;
};

beforeAll(() => {
  tmp = mkdtempSync(join(tmpdir(), 'vse-fuzz-'));
  chmodSync(tmp, 0o755);
  admin = join(tmp, 'admin');
  proj = join(tmp, 'proj');
  data = join(tmp, 'data');
  for (const d of [admin, proj, data, join(data, 'home'), join(tmp, 'ro'), join(tmp, 'state')]) mkdirSync(d, { recursive: true, mode: 0o755 });
  writeFileSync(join(admin, 'fuzzbase.xml'), ADMIN_BASE.split(HERE).join(tmp));
  writeFileSync(join(proj, 'sibling.xml'), SIBLING);
  writeFileSync(join(proj, 'app.conf'), 'x=1\n');
  writeFileSync(join(data, 'app.conf'), 'x=1\n');
  writeFileSync(join(data, 'vmlinuz'), 'not a kernel\n');
  // a cycle, and a chain longer than the layer limit
  writeFileSync(join(proj, 'cycle1.xml'), '<vse name="c1" extends="./cycle2.xml"><os base="minimal"/></vse>');
  writeFileSync(join(proj, 'cycle2.xml'), '<vse name="c2" extends="./cycle1.xml"/>');
  for (let k = 0; k < 20; k++) writeFileSync(join(proj, `deep${k}.xml`), `<vse name="d${k}" extends="${k < 19 ? `./deep${k + 1}.xml` : 'fuzzbase'}"/>`);
  site = {
    stateDir: join(tmp, 'state'), cacheDir: join(tmp, 'cache'), logDir: join(tmp, 'log'), qemuUser: 'nobody', kernelPackage: 'linux-image-cloud-amd64', accel: 'tcg', tcgCacheMiB: 32, bootTimeoutSec: 60,
    limits: { maxMemoryMiB: 4096, maxVcpus: 8, maxVmsPerNode: 16, maxDiskMiB: 65536, maxMemoryPerNodeMiB: 16384 },
    allowedHypervisors: ['qemu', 'libvirt'],
    allowedHostPaths: [{ path: data, modes: ['ro', 'rw'] }, { path: join(tmp, 'ro'), modes: ['ro'] }],
    descriptionDirs: [admin],
    sources: [join(tmp, 'site.json')],
  };
  VALUES = [...new Set([...Object.values(SEEDS), ADMIN_BASE, SIBLING].flatMap((t) => attrSpans(t.split(HERE).join(tmp)).map((m) => m[2] as string)))];
});
afterAll(() => {
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

describe('description fuzzing', () => {
  it('the seeds are valid descriptions', () => {
    for (const [name, text] of Object.entries(SEEDS)) {
      writeFileSync(join(proj, 'u.xml'), text.split(HERE).join(tmp));
      const r = resolveDescription(join(proj, 'u.xml'), site, { checkReadable: true });
      expect(r.problems.map(formatProblem), `seed ${name}`).toEqual([]);
      expect(r.description?.name).toBe(`seed-${name.toLowerCase()}`);
    }
  });

  it(`never throws, and refuses with located problems only (seed ${SEED})`, { timeout: 60_000 }, () => {
    console.log(`descriptor fuzz: seed ${SEED} (replay: VSE_FUZZ_SEED=${SEED}), ${CASES} mutants`);
    const t0 = performance.now();
    const thrown: { i: number; c: Case; err: string }[] = [];
    const malformed: { i: number; c: Case; why: string; problem: string }[] = [];
    const inconsistent: { i: number; c: Case }[] = [];
    const slow: { ms: number; i: number; ops: string }[] = [];
    let valid = 0;
    let rejected = 0;
    const perOp: Record<string, { n: number; rejected: number }> = {};
    const indices = ONLY !== undefined ? [ONLY] : Array.from({ length: CASES }, (_, i) => i);
    for (const i of indices) {
      const c = makeCase(i);
      if (ONLY !== undefined) console.log(`case ${i}: seed ${c.seed}, ${c.target} file, ops ${c.ops.join('+')}, checkReadable ${c.checkReadable}\n${show(c.bytes)}`);
      let r: Resolution;
      const t1 = performance.now();
      try {
        r = runCase(c);
        slow.push({ ms: performance.now() - t1, i, ops: c.ops.join('+') });
      } catch (err) {
        thrown.push({ i, c, err: (err as Error)?.stack?.split('\n').slice(0, 3).join(' | ') ?? String(err) });
        continue;
      }
      if (ONLY !== undefined) console.log(r.problems.map(formatProblem).join('\n') || 'valid');
      const ok = r.description !== undefined && r.problems.length === 0;
      if (!ok && (r.description !== undefined || r.problems.length === 0)) inconsistent.push({ i, c });
      if (ok) valid++;
      else rejected++;
      for (const name of new Set(c.ops)) {
        const s = (perOp[name] ??= { n: 0, rejected: 0 });
        s.n++;
        if (!ok) s.rejected++;
      }
      for (const p of r.problems) {
        const why = isStructured(p);
        if (why) malformed.push({ i, c, why, problem: JSON.stringify(p) });
      }
    }
    const ms = performance.now() - t0;
    const total = indices.length;
    console.log(`descriptor fuzz: ${total} mutants in ${(ms / 1000).toFixed(2)} s: ${rejected} rejected (${((100 * rejected) / total).toFixed(1)}%), ${valid} valid (${((100 * valid) / total).toFixed(1)}%), ${thrown.length} threw, ${malformed.length} malformed problems`);
    console.log(`per operator (mutants using it / rejected): ${Object.entries(perOp).sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => `${k} ${v.n}/${v.rejected}`).join(', ')}`);
    slow.sort((a, b) => b.ms - a.ms);
    console.log(`slowest: ${slow.slice(0, 5).map((x) => `case ${x.i} ${x.ops} ${x.ms.toFixed(0)} ms`).join(', ')}`);

    const report = (xs: { i: number; c: Case }[], what: (x: never) => string): string => {
      const seen = new Map<string, string>();
      for (const x of xs) {
        const key = what(x as never);
        if (!seen.has(key)) seen.set(key, `  case ${x.i} (seed ${x.c.seed}, ${x.c.target} file, ${x.c.ops.join('+')}; replay: VSE_FUZZ_SEED=${SEED} VSE_FUZZ_ONLY=${x.i}): ${key}\n    input: ${show(x.c.bytes)}`);
      }
      return [...seen.values()].slice(0, 8).join('\n');
    };
    const failures = [
      thrown.length ? `resolveDescription threw on ${thrown.length} mutants:\n${report(thrown, (x: (typeof thrown)[0]) => x.err)}` : '',
      malformed.length ? `${malformed.length} problems are not located:\n${report(malformed, (x: (typeof malformed)[0]) => `${x.why}: ${x.problem}`)}` : '',
      inconsistent.length ? `${inconsistent.length} results have both a description and problems, or neither:\n${report(inconsistent, () => 'inconsistent')}` : '',
    ].filter(Boolean);
    expect(failures.length, failures.join('\n')).toBe(0);
    if (ONLY === undefined) {
      // the fuzzer must not degenerate into only-garbage or only-harmless mutants
      expect(rejected / total).toBeGreaterThanOrEqual(0.3);
      expect(valid / total).toBeGreaterThanOrEqual(0.01);
      expect(total).toBeGreaterThanOrEqual(Math.min(CASES, 2000));
    }
  });
});
