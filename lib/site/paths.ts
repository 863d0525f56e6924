/** Where vse finds its own files: the package root, shipped config, and install-time settings. */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

function findRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'config', 'site.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error('vse: cannot find the package root (package.json with config/)');
    dir = up;
  }
}

/** The package root: the source tree, or $PREFIX/lib/vse once installed. */
export const packageRoot = findRoot();

/** Shipped defaults: site config, base descriptions. */
export const shippedConfigDir = join(packageRoot, 'config');

interface InstallInfo {
  sysconfdir: string;
  prefix: string;
}

function readInstallInfo(): InstallInfo {
  const file = join(packageRoot, 'install.json');
  if (existsSync(file)) return JSON.parse(readFileSync(file, 'utf8')) as InstallInfo;
  return { sysconfdir: '/etc', prefix: packageRoot };
}

/** Written by `make install`; the source tree uses /etc. */
export const installInfo: InstallInfo = readInstallInfo();
