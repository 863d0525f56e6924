/**
 * The scheduler hooks' shared frame: safe environment, logging to the site's log dir and stderr,
 * and the rule that decides the exit code (0 whenever this node is fine).
 */
import { join } from 'node:path';
import { loadSiteConfig, type SiteConfig } from '../site/config.js';
import { HostError, UserError, describeFailure } from '../util/errors.js';
import { createLogger, type Logger } from '../util/log.js';

/** Slurm gives Prolog/Epilog no PATH: set a fixed, root-safe one before anything is started. */
export function safeEnvironment(): void {
  process.env.PATH = '/usr/sbin:/usr/bin:/sbin:/bin';
  process.env.LC_ALL = 'C';
  delete process.env.NODE_OPTIONS;
  process.umask(0o022);
}

/** Run a hook body; its exit code: 0 on success or on a user's mistake, 1 when the node is unwell. */
export async function runHook(name: string, tagOf: () => string, body: (site: SiteConfig, log: Logger) => Promise<void>): Promise<number> {
  safeEnvironment();
  let site: SiteConfig;
  let log = createLogger({ tag: `vse ${name}` });
  try {
    site = loadSiteConfig();
    log = createLogger({ tag: `vse ${name} ${tagOf()}`, file: join(site.logDir, `${name}.log`) });
  } catch (err) {
    log.error(describeFailure(err).text);
    return 1;
  }
  try {
    await body(site, log);
    return 0;
  } catch (err) {
    const f = describeFailure(err);
    log.error(f.text);
    // A user's mistake must not drain the node; the host's own failure must.
    return err instanceof UserError && !(err instanceof HostError) ? 0 : 1;
  }
}
