/**
 * Paths inside an image tree, resolved the way the guest will see them: absolute symlinks lead
 * back into the tree, `..` stops at its root. Host-side work on a tree never leaves it.
 */
import { lstatSync, readlinkSync } from 'node:fs';
import { join, posix } from 'node:path';
import { UserError } from '../util/errors.js';

const MAX_LINKS = 40;

/** The host path of `guestPath` inside `root`, following symlinks within the tree (not the last one unless asked). */
export function resolveIn(root: string, guestPath: string, followLast = false): string {
  let parts = posix.normalize(guestPath).split('/').filter(Boolean);
  const done: string[] = [];
  let links = 0;
  while (parts.length > 0) {
    const [head, ...rest] = parts as [string, ...string[]];
    parts = rest;
    if (head === '..') {
      done.pop();
      continue;
    }
    if (head === '.') continue;
    const host = join(root, ...done, head);
    let isLink = false;
    try {
      isLink = lstatSync(host).isSymbolicLink();
    } catch {
      // does not exist (yet): the rest is created as written
    }
    if (isLink && (rest.length > 0 || followLast)) {
      if (++links > MAX_LINKS) throw new UserError(`${guestPath}: too many levels of symbolic links in the image`);
      const target = readlinkSync(host);
      if (target.startsWith('/')) done.length = 0;
      parts = [...target.split('/').filter(Boolean), ...parts];
      continue;
    }
    done.push(head);
  }
  return join(root, ...done);
}
