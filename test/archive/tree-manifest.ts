import { createHash } from 'node:crypto';
import { lstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { native } from '../../src/native/native.js';

/**
 * Everything observable about a tree, one line per path: type, mode, owner, size, content hash, mtime in ns
 * (`mtimeSeconds`: in whole seconds, what a layer tar keeps, as Docker's), xattrs, symlink target, device number,
 * and which earlier path an inode was first seen at (hardlink groups).
 */
export function treeManifest(root: string, opts: { dirMtimes?: boolean; mtimeSeconds?: boolean } = {}): string[] {
  const lines: string[] = [];
  const inodes = new Map<bigint, string>();
  const walk = (rel: string): void => {
    const path = rel === '' ? root : `${root}/${rel}`;
    const st = lstatSync(path, { bigint: true });
    const type = st.isFile() ? 'f' : st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : st.isCharacterDevice() ? 'c' : st.isBlockDevice() ? 'b' : st.isFIFO() ? 'p' : 's';
    const parts = [rel === '' ? '.' : rel, type, (st.mode & 0o7777n).toString(8), `${st.uid}:${st.gid}`];
    if (type !== 'd' || opts.dirMtimes !== false) parts.push(opts.mtimeSeconds ? `mtime=${st.mtimeNs / 1_000_000_000n}s` : `mtime=${st.mtimeNs}`);
    if (type === 'f') {
      const first = inodes.get(st.ino);
      if (first !== undefined) parts.push(`link=${first}`);
      else {
        inodes.set(st.ino, rel);
        parts.push(`size=${st.size}`, createHash('sha256').update(readFileSync(path)).digest('hex').slice(0, 16));
      }
    }
    if (type === 'l') parts.push(`-> ${readlinkSync(path)}`);
    if (type === 'c' || type === 'b') parts.push(`rdev=${st.rdev}`);
    for (const x of native.llistxattr(path).sort()) parts.push(`${x}=${native.lgetxattr(path, x)?.toString('hex')}`);
    lines.push(parts.join(' '));
    if (type === 'd') for (const name of readdirSync(path).sort()) walk(rel === '' ? name : `${rel}/${name}`);
  };
  walk('');
  return lines;
}
