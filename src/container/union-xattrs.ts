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
  // A walk asks for the entries of one directory in a row: its host path is looked up once.
  let last = { dir: '', host: '' };
  return async (p) => {
    const dir = posix.dirname(p);
    if (last.dir !== dir) {
      const real = await fs.realpath(dir);
      last = { dir, host: top + (real === '/' ? '' : real) };
    }
    return hostXattrs(`${last.host}/${posix.basename(p)}`);
  };
}
