/** No scheduler: a desktop or a login node running `vse run`. */
import { hostname, userInfo } from 'node:os';
import type { JobContext } from './context.js';

export function localContext(descriptionJson: string, descriptionFile: string): JobContext {
  const u = userInfo();
  const host = hostname().split('.')[0]?.replace(/[^A-Za-z0-9_.-]/g, '-') || 'localhost';
  return {
    jobId: `local-${process.pid}`,
    node: host,
    uid: u.uid,
    gid: u.gid,
    user: u.username,
    descriptionJson,
    descriptionFile,
    scheduler: 'local',
  };
}
