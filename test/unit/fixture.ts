/** Description test fixtures: files in a temp dir, an admin directory, a site config. */
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { afterAll, onTestFinished } from 'vitest';
import type { SiteConfig } from '../../lib/site/config.js';
import { formatProblem } from '../../lib/descriptor/problem.js';
import { resolveDescription } from '../../lib/descriptor/resolve.js';

export interface Fixture {
  dir: string;
  /** Root-owned, 0755: layers here are admin layers. */
  admin: string;
  site: SiteConfig;
  /** Write files relative to dir (`admin/x.xml` lands in the admin directory). */
  write(files: Record<string, string | Buffer>): void;
  link(path: string, target: string): void;
  path(rel: string): string;
  /** Resolve a file; the formatted problems (paths relative to the fixture dir) and the model. */
  check(rel: string, buildable?: boolean): { problems: string[]; description: ReturnType<typeof resolveDescription>['description']; warnings: string[] };
}

export function fixture(siteExtra: Partial<SiteConfig> = {}): Fixture {
  const dir = mkdtempSync('/tmp/vse-desc-');
  chmodSync(dir, 0o755);
  const admin = join(dir, 'admin');
  mkdirSync(admin, { mode: 0o755 });
  chmodSync(admin, 0o755);
  const cleanup = (): void => rmSync(dir, { recursive: true, force: true });
  // made inside a test: gone when it ends; at file level: when the file's tests end
  try {
    onTestFinished(cleanup);
  } catch {
    afterAll(cleanup);
  }
  const site: SiteConfig = {
    stateDir: join(dir, 'state'), cacheDir: join(dir, 'cache'), logDir: join(dir, 'log'), qemuUser: 'nobody', kernelPackage: 'k', accel: 'tcg', tcgCacheMiB: 32, bootTimeoutSec: 60,
    limits: { maxMemoryMiB: 4096, maxVcpus: 8, maxVmsPerNode: 16, maxDiskMiB: 65536, maxMemoryPerNodeMiB: 16384 },
    allowedHypervisors: ['qemu', 'libvirt'], allowedHostPaths: [], descriptionDirs: [admin], sources: ['/etc/vse/site.json'],
    ...siteExtra,
  };
  const rel = (s: string): string => s.split(`${dir}/`).join('');
  return {
    dir, admin, site,
    write(files) {
      for (const [p, text] of Object.entries(files)) {
        const full = join(dir, p);
        mkdirSync(dirname(full), { recursive: true });
        writeFileSync(full, text, { mode: 0o644 });
        chmodSync(full, 0o644);
        chownSync(full, 0, 0);
      }
    },
    link(p, target) {
      symlinkSync(target, join(dir, p));
    },
    path: (p) => join(dir, p),
    check(p, buildable = false) {
      const r = resolveDescription(join(dir, p), site, { checkReadable: true, buildable });
      return { problems: r.problems.map((x) => rel(formatProblem(x))), description: r.description, warnings: r.warnings.map(rel) };
    },
  };
}
