/**
 * What the host asks the guest's vse-task (lib/guest/task.c) to run: one base64 word, so the SSH
 * server's shell sees no syntax at all, whatever the command, its arguments or the environment hold.
 */

export interface TaskRequest {
  /** 16 hex digits naming the command while it runs (for signal requests). */
  id: string;
  uid: number;
  gid: number;
  cwd: string;
  /** The whole environment of the command, `NAME=value` each. */
  env: string[];
  argv: string[];
}

/** Where vse-task lives in every guest. */
export const TASK_PATH = '/usr/lib/vse/vse-task';

function encode(fields: string[]): string {
  for (const f of fields) if (f.includes('\0')) throw new Error('encodeRequest: a field holds a NUL byte');
  return Buffer.from(fields.map((f) => `${f}\0`).join('')).toString('base64');
}

export function encodeRequest(r: TaskRequest): string {
  if (r.argv.length === 0) throw new Error('encodeRequest: empty command');
  if (!/^[0-9a-f]{16}$/.test(r.id)) throw new Error('encodeRequest: the id must be 16 hex digits');
  return encode(['vse-task-1', r.id, String(r.uid), String(r.gid), r.cwd, String(r.env.length), ...r.env, ...r.argv]);
}

/** The command line the SSH server runs (with root's shell, as `sh -c LINE`). */
export function taskCommand(r: TaskRequest): string {
  return `${TASK_PATH} ${encodeRequest(r)}`;
}

/** The longest command line sent to the guest's SSH server (dropbear takes at most 9000 bytes). */
export const MAX_COMMAND = 8000;

/**
 * How a request travels: on the command line, or, when that would be too long (a task's whole
 * environment can be), as `vse-task -LEN` with the LEN bytes of base64 first on the command's stdin.
 */
export function taskInvocation(r: TaskRequest): { command: string; stdinPrefix?: Buffer } {
  const b64 = encodeRequest(r);
  if (TASK_PATH.length + 1 + b64.length <= MAX_COMMAND) return { command: `${TASK_PATH} ${b64}` };
  return { command: `${TASK_PATH} -${b64.length}`, stdinPrefix: Buffer.from(b64) };
}

/** The command line that sends signal number `signal` to the running command `id`. */
export function signalCommand(id: string, signal: number): string {
  return `${TASK_PATH} ${encode(['vse-signal-1', id, String(signal)])}`;
}

/** Variables the host never forwards into a guest (they describe the host side). */
const HOST_ONLY = /^(LD_[A-Z_]+|SSH_[A-Z_]+|DISPLAY|XAUTHORITY|DBUS_SESSION_BUS_ADDRESS|XDG_RUNTIME_DIR|VSE_SITE_CONFIG|TMPDIR)$/;

/**
 * The environment of a command in the guest: a fixed base (PATH, HOME, USER...) plus the variables
 * the caller forwards. `forward` names variables of `from`; a name that ends in `*` is a prefix.
 */
export function guestEnvironment(o: { user: string; uid: number; from: NodeJS.ProcessEnv; forward: string[]; set?: Record<string, string> }): string[] {
  const home = o.uid === 0 ? '/root' : `/home/${o.user}`;
  const env = new Map<string, string>([
    ['PATH', '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'],
    ['HOME', home], ['USER', o.uid === 0 ? 'root' : o.user], ['LOGNAME', o.uid === 0 ? 'root' : o.user], ['SHELL', '/bin/sh'],
  ]);
  for (const pat of o.forward) {
    const prefix = pat.endsWith('*') ? pat.slice(0, -1) : undefined;
    for (const [k, v] of Object.entries(o.from)) {
      if (v === undefined || HOST_ONLY.test(k)) continue;
      if (prefix !== undefined ? k.startsWith(prefix) : k === pat) env.set(k, v);
    }
  }
  for (const [k, v] of Object.entries(o.set ?? {})) env.set(k, v);
  return [...env].map(([k, v]) => `${k}=${v}`);
}

/**
 * Beside HOST_ONLY, what a task's host environment holds that the guest has its own of (HOME,
 * SHELL, the working directory) or that is only vse's business on the host (the job's copy of
 * the description, the --vse options, which no program in the guest can act on).
 */
const TASK_HOST_ONLY = /^(HOME|SHELL|USER|LOGNAME|PWD|OLDPWD|SHLVL|_|SLURM_SPANK_VSE_[A-Z_]+|SLURM_SPANK__SLURM_SPANK_OPTION_vse_[A-Za-z_-]+)$/;

/**
 * The environment of a scheduler's task in the guest: the guest's base (as guestEnvironment) plus
 * every variable of the task's own environment (Slurm's SLURM_* and what the user exported) but
 * the host-only ones; PATH is the task's, followed by the base directories it lacks; PWD is `cwd`.
 */
export function taskEnvironment(o: { user: string; uid: number; from: NodeJS.ProcessEnv; cwd: string; set?: Record<string, string> }): string[] {
  const env = new Map(guestEnvironment({ user: o.user, uid: o.uid, from: {}, forward: [] }).map((kv) => [kv.slice(0, kv.indexOf('=')), kv.slice(kv.indexOf('=') + 1)]));
  for (const [k, v] of Object.entries(o.from)) {
    if (v === undefined || HOST_ONLY.test(k) || TASK_HOST_ONLY.test(k) || k.includes('=') || k === '') continue;
    if (k === 'PATH') {
      const dirs = v.split(':').filter((d) => d !== '');
      for (const d of (env.get('PATH') ?? '').split(':')) if (!dirs.includes(d)) dirs.push(d);
      env.set(k, dirs.join(':'));
    } else {
      env.set(k, v);
    }
  }
  env.set('PWD', o.cwd);
  for (const [k, v] of Object.entries(o.set ?? {})) env.set(k, v);
  return [...env].map(([k, v]) => `${k}=${v}`);
}
