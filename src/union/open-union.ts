import { parseBranches, type Branch } from './branch-spec.js';
import { UnionFs } from './union-fs.js';

export type { Branch, BranchMode } from './branch-spec.js';
export type { UnionFs, UnionDirent, UnionDir } from './union-fs.js';
export type { UnionFileHandle } from './union-file-handle.js';

/**
 * A userspace union filesystem over `branches`, topmost first: an AUFS `dirs=` string
 * (`'/a=rw:/b=ro'`) or `[{ path, mode }]`. Writes land in the topmost branch, which must be `rw`
 * (otherwise every write fails with EROFS); no mount, no root.
 */
export async function openUnion(branches: string | readonly Branch[]): Promise<UnionFs> {
  return new UnionFs(parseBranches(branches)).init();
}
