/** A problem found in a description, located by file, line, column and element path. */
import { UserError } from '../util/errors.js';

export interface Problem {
  file: string;
  line: number;
  col: number;
  /** Element path such as `/vse/vm/@memory`. */
  path: string;
  message: string;
  expected?: string;
  hint?: string;
}

/** `file:line:col: path: message; expected ...; hint: ...` */
export function formatProblem(p: Problem): string {
  let s = `${p.file}:${p.line}:${p.col}: ${p.path}: ${p.message}`;
  if (p.expected) s += `; expected ${p.expected}`;
  if (p.hint) s += `; hint: ${p.hint}`;
  return s;
}

/** Thrown when a description is invalid: carries every problem found, not only the first. */
export class DescriptionError extends UserError {
  override name = 'DescriptionError';
  constructor(readonly problems: Problem[], readonly warnings: string[] = []) {
    super([...warnings.map((w) => `warning: ${w}`), ...problems.map(formatProblem)].join('\n'));
  }
}
