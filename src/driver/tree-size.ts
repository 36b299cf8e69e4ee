import { lstat, opendir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Change } from './driver.js';
import { isErrno } from '../errors.js';

/** Bytes of everything but directories below `dir`, like `du --apparent-size`; a hardlinked inode counts once. */
export async function treeSize(dir: string): Promise<number> {
  const seen = new Set<bigint>();
  let size = 0;
  const stack = [dir];
  while (stack.length > 0) {
    const d = stack.pop()!;
    for await (const ent of await opendir(d)) {
      const p = join(d, ent.name);
      if (ent.isDirectory()) {
        stack.push(p);
        continue;
      }
      const st = await lstat(p, { bigint: true });
      if (st.size === 0n || seen.has(st.ino)) continue;
      seen.add(st.ino);
      size += Number(st.size);
    }
  }
  return size;
}

/** Bytes the added and changed non-directories of `changes` take in `root`; a hardlinked inode counts once. */
export async function changesSize(root: string, changes: Change[]): Promise<number> {
  const seen = new Set<bigint>();
  let size = 0;
  for (const c of changes) {
    if (c.kind === 'D') continue;
    let st;
    try {
      st = await lstat(join(root, c.path), { bigint: true });
    } catch (e) {
      if (isErrno(e, 'ENOENT')) continue;
      throw e;
    }
    if (st.isDirectory() || seen.has(st.ino)) continue;
    seen.add(st.ino);
    size += Number(st.size);
  }
  return size;
}
