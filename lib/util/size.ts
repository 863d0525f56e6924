/** Human sizes (`512M`, `2G`, `1.5GiB`) to MiB. */

const UNITS: Record<string, number> = { k: 1 / 1024, m: 1, g: 1024, t: 1024 * 1024 };

/** MiB for a size with a unit, or undefined when the text is not such a size. */
export function parseSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt])(?:i?b)?\s*$/i.exec(text);
  if (!m || m[1] === undefined || m[2] === undefined) return undefined;
  const unit = UNITS[m[2].toLowerCase()];
  if (unit === undefined) return undefined;
  const mib = Number(m[1]) * unit;
  return Number.isFinite(mib) ? Math.round(mib) : undefined;
}

/** `128M`, `2G` for a MiB count. */
export function formatSize(mib: number): string {
  return mib % 1024 === 0 ? `${mib / 1024}G` : `${mib}M`;
}
