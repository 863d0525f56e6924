/**
 * The apt sources a Debian base is built from: the spec's mirror, else the host's own Debian
 * sources for the release (one-line and deb822 files), else deb.debian.org.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { type DebianSpec, MIRROR_RE, RELEASE_RE, normalize } from './debian-spec.js';

export const DEBIAN_DEFAULT_MIRROR = 'http://deb.debian.org/debian';

interface SourceEntry {
  types: string[];
  uris: string[];
  suites: string[];
  components: string[];
  signedBy?: string;
  enabled: boolean;
}

function parseOneLine(text: string): SourceEntry[] {
  const out: SourceEntry[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/#.*/, '').trim();
    if (!line) continue;
    const m = /^(deb|deb-src)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$/.exec(line);
    if (!m) continue;
    const signedBy = /signed-by=(\S+)/.exec(m[2] ?? '')?.[1];
    out.push({ types: [m[1] as string], uris: [m[3] as string], suites: [m[4] as string], components: (m[5] ?? '').split(/\s+/).filter(Boolean), ...(signedBy ? { signedBy } : {}), enabled: true });
  }
  return out;
}

function parseDeb822(text: string): SourceEntry[] {
  const out: SourceEntry[] = [];
  for (const stanza of text.split(/\n\s*\n/)) {
    const fields = new Map<string, string>();
    let last = '';
    for (const raw of stanza.split('\n')) {
      if (raw.startsWith('#')) continue;
      if (/^\s/.test(raw) && last) {
        fields.set(last, `${fields.get(last) ?? ''}\n${raw.trim()}`);
        continue;
      }
      const m = /^([A-Za-z-]+):\s*(.*)$/.exec(raw);
      if (!m) continue;
      last = (m[1] as string).toLowerCase();
      fields.set(last, (m[2] as string).trim());
    }
    const words = (k: string): string[] => (fields.get(k) ?? '').split(/\s+/).filter(Boolean);
    if (!fields.has('uris')) continue;
    const signedBy = fields.get('signed-by');
    out.push({ types: words('types'), uris: words('uris'), suites: words('suites'), components: words('components'), ...(signedBy ? { signedBy } : {}), enabled: (fields.get('enabled') ?? 'yes').toLowerCase() !== 'no' });
  }
  return out;
}

/**
 * The host's Debian apt sources for a release, as sources.list lines: the release, its -updates
 * and its -security suites. Entries signed by anything but the Debian archive keyring (third-party
 * repositories that happen to use the same suite name) are left out.
 */
export function hostDebianSources(release: string, aptDir = '/etc/apt'): string[] {
  const entries: SourceEntry[] = [];
  const read = (file: string, parse: (t: string) => SourceEntry[]): void => {
    try {
      entries.push(...parse(readFileSync(file, 'utf8')));
    } catch {
      // unreadable or gone: not a source
    }
  };
  read(join(aptDir, 'sources.list'), parseOneLine);
  const dir = join(aptDir, 'sources.list.d');
  let names: string[] = [];
  try {
    names = readdirSync(dir).sort();
  } catch {
    // none
  }
  for (const n of names) {
    if (n.endsWith('.list')) read(join(dir, n), parseOneLine);
    else if (n.endsWith('.sources')) read(join(dir, n), parseDeb822);
  }
  const suites = new Set([release, `${release}-updates`, `${release}-security`, `${release}/updates`]);
  const lines: string[] = [];
  for (const e of entries) {
    if (!e.enabled || !e.types.includes('deb')) continue;
    if (e.signedBy !== undefined && !e.signedBy.includes('debian-archive-keyring')) continue;
    for (const uri of e.uris) {
      if (!MIRROR_RE.test(uri)) continue;
      for (const suite of e.suites.filter((s) => suites.has(s))) {
        const comps = e.components.filter((c) => /^[a-z0-9-]+$/.test(c));
        lines.push(`deb ${uri} ${suite} ${comps.length > 0 ? comps.join(' ') : 'main'}`);
      }
    }
  }
  return [...new Set(lines)];
}

/** The sources a spec builds from: its mirror, else the host's Debian sources, else deb.debian.org. */
export function debianSources(spec: DebianSpec): string[] {
  const n = normalize(spec);
  if (n.mirror !== undefined) return [`deb ${n.mirror} ${n.release} main`];
  const host = hostDebianSources(n.release);
  if (host.some((l) => l.split(' ')[2] === n.release)) return host;
  return [`deb ${DEBIAN_DEFAULT_MIRROR} ${n.release} main`];
}

/** The host's Debian codename (a description without a release gets the host's), else bookworm. */
export function defaultDebianRelease(): string {
  try {
    const os = readFileSync('/etc/os-release', 'utf8');
    const id = /^ID=(.*)$/m.exec(os)?.[1]?.replace(/"/g, '');
    const codename = /^VERSION_CODENAME=(.*)$/m.exec(os)?.[1]?.replace(/"/g, '');
    if (id === 'debian' && codename && RELEASE_RE.test(codename)) return codename;
  } catch {
    // not readable: the default below
  }
  return 'bookworm';
}
