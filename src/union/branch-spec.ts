import { isAbsolute, resolve } from 'node:path';
import { invalidArgument } from '../errors.js';

export type BranchMode = 'rw' | 'ro';

/** One branch of a union, as given by the user (topmost first). */
export interface Branch {
  path: string;
  mode: BranchMode;
}

/**
 * Branches from AUFS's `dirs=` syntax (`/a=rw:/b=ro`, a missing mode is `ro` except for the first
 * branch, as in AUFS) or from an array. Paths are made absolute.
 */
export function parseBranches(spec: string | readonly Branch[]): Branch[] {
  const raw: Branch[] =
    typeof spec === 'string'
      ? spec
          .split(':')
          .filter((s) => s !== '')
          .map((s, i) => {
            const eq = s.lastIndexOf('=');
            const mode = eq < 0 ? (i === 0 ? 'rw' : 'ro') : s.slice(eq + 1);
            const path = eq < 0 ? s : s.slice(0, eq);
            if (mode !== 'rw' && mode !== 'ro') throw invalidArgument(`union branch ${JSON.stringify(s)}: mode must be rw or ro`);
            return { path, mode };
          })
      : [...spec];
  if (raw.length === 0) throw invalidArgument('a union needs at least one branch');
  return raw.map((b) => {
    if (typeof b.path !== 'string' || b.path === '') throw invalidArgument('union branch without a path');
    if (b.mode !== 'rw' && b.mode !== 'ro') throw invalidArgument(`union branch ${b.path}: mode must be rw or ro`);
    return { path: isAbsolute(b.path) ? resolve(b.path) : resolve(b.path), mode: b.mode };
  });
}
