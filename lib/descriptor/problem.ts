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

/** Control characters and line breaks echoed from a description, made visible (one problem, one line; no terminal escapes). */
const oneLine = (s: string): string =>
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  s.replace(/[\0-\x1f\x7f-\x9f\u2028\u2029]/g, (c) => (c === '\n' ? '\\n' : c === '\t' ? '\\t' : `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`));

/** `file:line:col: path: message; expected ...; hint: ...` */
export function formatProblem(p: Problem): string {
  let s = `${p.file}:${p.line}:${p.col}: ${p.path}: ${p.message}`;
  if (p.expected) s += `; expected ${p.expected}`;
  if (p.hint) s += `; hint: ${p.hint}`;
  return oneLine(s);
}

/** Thrown when a description is invalid: carries every problem found, not only the first. */
export class DescriptionError extends UserError {
  override name = 'DescriptionError';
  constructor(readonly problems: Problem[], readonly warnings: string[] = []) {
    super([...warnings.map((w) => `warning: ${w}`), ...problems.map(formatProblem)].join('\n'));
  }
}
