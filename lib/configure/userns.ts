/**
 * The user namespace the Debian build runs in: the invoking user's subordinate ids (/etc/subuid,
 * /etc/subgid) become root inside it, so nothing runs as real root, and the host tools it needs.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { HostError } from '../util/errors.js';

/** Where the build looks for its tools (and the PATH it runs them with). */
export const TOOL_PATH = '/usr/sbin:/usr/bin:/sbin:/bin';
/** A subordinate id range must cover the ids a Debian system uses (up to nobody, 65534). */
const MIN_SUBIDS = 65536;

interface IdRange {
  start: number;
  count: number;
}

export interface IdMapping {
  asRoot: boolean;
  user: string;
  uid: IdRange;
  gid: IdRange;
}

function readSubIds(file: string): { name: string; start: number; count: number }[] {
  try {
    return readFileSync(file, 'utf8').split('\n').map((l) => l.trim().split(':')).filter((f) => f.length === 3)
      .map(([name, start, count]) => ({ name: name as string, start: Number(start), count: Number(count) }))
      .filter((r) => Number.isInteger(r.start) && Number.isInteger(r.count));
  } catch {
    return [];
  }
}

/** The invoking user's subordinate id ranges; a clear error that says what to add when missing. */
export function subordinateIds(): IdMapping {
  const me = userInfo();
  const asRoot = me.uid === 0;
  const find = (file: string): IdRange | undefined => {
    // mmdebstrap looks the user up by name only; newuidmap (our root path) takes the name or the uid
    const rows = readSubIds(file).filter((r) => r.name === me.username || (asRoot && r.name === String(me.uid)));
    return rows.find((r) => r.count >= MIN_SUBIDS);
  };
  const uid = find('/etc/subuid');
  const gid = find('/etc/subgid');
  if (uid && gid) return { asRoot, user: me.username, uid, gid };
  const used = [...readSubIds('/etc/subuid'), ...readSubIds('/etc/subgid')].map((r) => r.start + r.count);
  const start = Math.max(100000, ...used);
  const end = start + MIN_SUBIDS - 1;
  throw new HostError(
    `building a Debian image needs a range of ${MIN_SUBIDS} subordinate ${uid ? 'gids' : 'uids'} for user ${me.username} ` +
      `(the build runs as root of a user namespace, mapped to those ids, never as real root); ` +
      `/etc/subuid and /etc/subgid have ${uid || gid ? 'only one of them' : 'none'}.\n` +
      `hint: add one, e.g. as root: usermod --add-subuids ${start}-${end} --add-subgids ${start}-${end} ${me.username}\n` +
      `      (or the lines "${me.username}:${start}:${MIN_SUBIDS}" in /etc/subuid and /etc/subgid; pick a range no other user has)`,
  );
}

/** argv prefix that runs a command as root of a user namespace mapped to the subordinate ids. */
export function nsPrefix(ids: IdMapping): string[] {
  return ids.asRoot
    ? ['unshare', '--user', `--map-users=${ids.uid.start},0,${ids.uid.count}`, `--map-groups=${ids.gid.start},0,${ids.gid.count}`, '--setuid=0', '--setgid=0', '--']
    : ['mmdebstrap', '--unshare-helper'];
}

function findTool(name: string): string | undefined {
  return TOOL_PATH.split(':').map((d) => join(d, name)).find((p) => existsSync(p));
}

/** The tools a build needs, with the package to install for each one missing. */
export function checkTools(ids: IdMapping): void {
  const need: [string, string][] = [['mmdebstrap', 'mmdebstrap'], ['mkfs.ext4', 'e2fsprogs'], ['qemu-img', 'qemu-utils'], ['dpkg-query', 'dpkg'], ['du', 'coreutils'], ['xargs', 'findutils']];
  need.push(ids.asRoot ? ['unshare', 'util-linux'] : ['newuidmap', 'uidmap']);
  const missing = need.filter(([tool]) => findTool(tool) === undefined);
  if (missing.length > 0) {
    throw new HostError(`building a Debian image needs ${missing.map(([t]) => t).join(', ')}; hint: apt-get install ${[...new Set(missing.map(([, p]) => p))].join(' ')}`);
  }
}

/** The namespace's root is an "other" user on the host: it must be able to reach the work directory. */
export function checkTraversable(dir: string, ids: IdMapping): void {
  for (let d = resolve(dir); ; d = dirname(d)) {
    const st = statSync(d);
    if ((st.mode & 0o001) === 0) {
      throw new HostError(
        `${d} (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}) does not let other users pass: the Debian build runs as subordinate uid ` +
          `${ids.uid.start}, which must reach ${dir}; hint: use a work directory under /var/cache or /tmp, or chmod o+x ${d}`,
      );
    }
    if (d === dirname(d)) return;
  }
}
