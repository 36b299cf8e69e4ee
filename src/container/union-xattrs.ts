import { posix } from 'node:path';
import { hostXattrs, type XattrReader } from '../archive/export-changes.js';
import type { UnionFs } from '../union/union-fs.js';

/**
 * Xattrs of union entries, which the union surface does not offer: read from the host file when the union
 * has one branch (its paths are that directory's); none for a union of several.
 */
export function unionXattrs(fs: UnionFs): XattrReader | undefined {
  if (fs.branches.length !== 1) return undefined;
  const top = fs.branches[0]!.path;
  return async (p) => {
    const dir = await fs.realpath(posix.dirname(p));
    return hostXattrs(`${top}${dir === '/' ? '' : dir}/${posix.basename(p)}`);
  };
}
