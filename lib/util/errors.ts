/** Error classes that the CLI and the prolog/epilog map to exit codes and messages. */

/** A problem the user can fix (bad input, missing file): printed as one clear message, exit 2. */
export class UserError extends Error {
  override name = 'UserError';
  readonly exitCode: number = 2;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** Something on the host is not as it must be (missing tool, failed boot): exit 1, message and cause. */
export class HostError extends Error {
  override name = 'HostError';
  readonly exitCode: number = 1;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** Exit code and printable text for any thrown value; internal bugs keep their stack. */
export function describeFailure(err: unknown): { exitCode: number; text: string } {
  if (err instanceof UserError || err instanceof HostError) {
    return { exitCode: err.exitCode, text: err.message };
  }
  const stack = err instanceof Error ? (err.stack ?? err.message) : String(err);
  return { exitCode: 1, text: `internal error (a bug in vse, please report it):\n${stack}` };
}
