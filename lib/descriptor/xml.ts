/** Safe XML reading: size and depth limits, no DTDs or entities, a located element tree. */
// The programs' bundles take the parser's CommonJS build, one file (.ci/bundle.js); its ES modules
// would take ~30 ms to load (vse validate runs at every submission).
import { XMLParser, XMLValidator } from 'fast-xml-parser';
import type { Problem } from './problem.js';

export const MAX_BYTES = 1024 * 1024;
export const MAX_DEPTH = 32;

export interface XmlAttr {
  value: string;
  line: number;
  col: number;
}

export interface XmlElement {
  name: string;
  path: string;
  line: number;
  col: number;
  attrs: Map<string, XmlAttr>;
  children: XmlElement[];
  text: string;
}

type Ordered = Record<string, unknown>;
const META = XMLParser.getMetaDataSymbol() as unknown as string;

function lineIndex(text: string): number[] {
  const starts = [0];
  for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) starts.push(i + 1);
  return starts;
}

function locate(starts: number[], offset: number): { line: number; col: number } {
  let lo = 0;
  let hi = starts.length - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if ((starts[mid] ?? 0) <= offset) lo = mid;
    else hi = mid - 1;
  }
  return { line: lo + 1, col: offset - (starts[lo] ?? 0) + 1 };
}

const NAMED: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** The five XML entities and character references, in one pass; anything else is reported. */
export function decodeEntities(s: string): { text: string; bad?: string } {
  let bad: string | undefined;
  const text = s.replace(/&(#x[0-9a-fA-F]{1,6}|#[0-9]{1,7}|[A-Za-z][A-Za-z0-9]*);?/g, (m, ref: string) => {
    if (!m.endsWith(';')) {
      bad ??= m;
      return m;
    }
    if (ref.startsWith('#')) {
      const code = ref[1] === 'x' ? parseInt(ref.slice(2), 16) : parseInt(ref.slice(1), 10);
      if (code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff)) return String.fromCodePoint(code);
      bad ??= m;
      return m;
    }
    const v = NAMED[ref];
    if (v === undefined) bad ??= m;
    return v ?? m;
  });
  return { text, bad };
}

/** Names fast-xml-parser throws on or renames; NUL cannot occur in a description, so it marks them. */
const RESERVED = new Set(['__proto__', 'constructor', 'prototype', 'hasOwnProperty', 'toString', 'valueOf', '__defineGetter__', '__defineSetter__', '__lookupGetter__', '__lookupSetter__']);
const mark = (n: string): string => (RESERVED.has(n) ? `\0${n}` : n);
const unmark = (n: string): string => (n.startsWith('\0') ? n.slice(1) : n);

/** A file over MAX_BYTES (also refused before reading it, by its size). */
export function tooLarge(file: string, size: number): Problem {
  return { file, line: 1, col: 1, path: '/', message: `the file is ${size} bytes`, expected: `at most ${MAX_BYTES} bytes`, hint: 'a description names files; it does not contain them' };
}

/** Parse description text into one root element, or return the problems that stop it. */
export function parseXml(file: string, bytes: Buffer): { root?: XmlElement; problems: Problem[] } {
  const at = (line: number, col: number, message: string, expected?: string, hint?: string): Problem => ({
    file, line, col, path: '/', message, expected, hint,
  });
  if (bytes.length === 0) return { problems: [at(1, 1, 'the file is empty', 'an XML document with a <vse> root element')] };
  if (bytes.length > MAX_BYTES) return { problems: [tooLarge(file, bytes.length)] };
  if (bytes.includes(0)) return { problems: [at(1, 1, 'the file contains NUL bytes (binary data)', 'UTF-8 XML text')] };
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    return { problems: [at(1, 1, 'the file is not valid UTF-8', 'UTF-8 XML text')] };
  }
  const starts = lineIndex(text);
  const dtd = /<!(DOCTYPE|ENTITY)/i.exec(text);
  if (dtd) {
    const { line, col } = locate(starts, dtd.index);
    return { problems: [at(line, col, `<!${dtd[1]}> is not allowed`, 'no DTD, no entities', 'descriptions never expand entities or fetch external files; remove the declaration')] };
  }
  const valid = XMLValidator.validate(text, { allowBooleanAttributes: false });
  if (valid !== true) {
    const e = valid.err;
    return { problems: [at(Math.max(1, Number(e.line) || 1), Math.max(1, Number(e.col) || 1), `malformed XML: ${e.msg.replace(/\.$/, "")}`, 'well-formed XML')] };
  }
  const parser = new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: '',
    preserveOrder: true,
    captureMetaData: true,
    processEntities: false,
    htmlEntities: false,
    ignoreDeclaration: true,
    ignorePiTags: true,
    commentPropName: '#comment',
    cdataPropName: '#cdata',
    parseTagValue: false,
    parseAttributeValue: false,
    // names the parser refuses (__proto__, constructor, prototype) or renames (toString, ...):
    // keep them, marked, so that they are reported as unknown names where they are
    transformTagName: mark,
    transformAttributeName: mark,
    // the parser's own nesting limit (its time grows with the square of the depth) throws; caught below
    maxNestedTags: 100,
    trimValues: false,
  });
  let doc: Ordered[];
  try {
    doc = parser.parse(text) as Ordered[];
  } catch (err) {
    const msg = (err as Error).message;
    if (/nested tags/i.test(msg)) return { problems: [at(1, 1, `elements nest deeper than ${MAX_DEPTH} levels`, `at most ${MAX_DEPTH} levels`)] };
    return { problems: [at(1, 1, `malformed XML: ${msg}`, 'well-formed XML')] };
  }
  const problems: Problem[] = [];
  const roots: XmlElement[] = [];

  const build = (node: Ordered, parentPath: string, depth: number): XmlElement | undefined => {
    const key = Object.keys(node).find((k) => k !== ':@');
    const name = key === undefined ? undefined : unmark(key);
    if (name === undefined || name === '#text' || name === '#comment') return undefined;
    const meta = (node as Record<string, unknown>)[META] as { startIndex?: number } | undefined;
    const pos = locate(starts, meta?.startIndex ?? 0);
    const path = `${parentPath}/${name}`;
    if (depth > MAX_DEPTH) {
      problems.push({ file, ...pos, path, message: `elements nest deeper than ${MAX_DEPTH} levels`, expected: `at most ${MAX_DEPTH} levels` });
      return undefined;
    }
    const el: XmlElement = { name, path, ...pos, attrs: new Map(), children: [], text: '' };
    const rawAttrs = (node[':@'] ?? {}) as Record<string, unknown>;
    const tagText = text.slice(meta?.startIndex ?? 0, text.indexOf('>', meta?.startIndex ?? 0) + 1);
    for (const [mk, v] of Object.entries(rawAttrs)) {
      const k = unmark(mk);
      const off = tagText.search(new RegExp(`\\s${k.replace(/[^\w-]/g, '\\$&')}\\s*=`));
      const apos = off >= 0 ? locate(starts, (meta?.startIndex ?? 0) + off + 1) : pos;
      const d = decodeEntities(String(v));
      if (d.bad) problems.push({ file, ...apos, path: `${path}/@${k}`, message: `unknown entity ${d.bad}`, expected: '&amp; &lt; &gt; &quot; &apos; or a character reference such as &#65;', hint: 'descriptions have no DTD, so no other entities exist' });
      el.attrs.set(k, { value: d.text, ...apos });
    }
    for (const child of (node[key as string] ?? []) as Ordered[]) {
      if ('#text' in child) {
        const d = decodeEntities(String(child['#text']));
        if (d.bad) problems.push({ file, ...pos, path, message: `unknown entity ${d.bad} in the text of <${name}>`, expected: '&amp; &lt; &gt; &quot; &apos; or a character reference such as &#65;', hint: 'or put the text in a <![CDATA[ ... ]]> section' });
        el.text += d.text;
      } else if ('#cdata' in child) {
        el.text += String((child['#cdata'] as Ordered[] | undefined)?.[0]?.['#text'] ?? '');
      }
      else {
        const c = build(child, path, depth + 1);
        if (c) el.children.push(c);
      }
    }
    return el;
  };

  for (const node of doc) {
    const el = build(node, '', 1);
    if (el) roots.push(el);
  }
  if (problems.length > 0) return { problems };
  if (roots.length !== 1 || roots[0] === undefined) {
    return { problems: [at(1, 1, `found ${roots.length} root elements`, 'exactly one <vse> root element')] };
  }
  return { root: roots[0], problems: [] };
}
