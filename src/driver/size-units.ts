import { invalidArgument } from '../errors.js';

const multipliers: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4, p: 1024 ** 5 };

/** A size as Docker's storage options spell it (`50M`, `10GB`, `1.5g`, `20GiB`): binary units, case-insensitive. */
export function parseSize(text: string, what: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$/i.exec(text);
  if (m === null) throw invalidArgument(`${what}: invalid size '${text}'`);
  const bytes = Math.floor(Number(m[1]) * multipliers[m[2]!.toLowerCase()]!);
  if (!Number.isSafeInteger(bytes)) throw invalidArgument(`${what}: size '${text}' is too large`);
  return bytes;
}
