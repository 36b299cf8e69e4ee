import { hostXattrs, type XattrReader } from '../archive/export-changes.js';
import type { UnionFs } from '../union/union-fs.js';

/** Xattrs of union entries, which the union's fs surface does not offer: read from the branch file the union shows. */
export function unionXattrs(fs: UnionFs): XattrReader {
  return async (p) => hostXattrs(await fs.hostPath(p));
}
