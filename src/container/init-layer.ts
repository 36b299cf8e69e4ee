import { lstatSync, mkdirSync, unlinkSync, symlinkSync, openSync, closeSync, fchownSync } from 'node:fs';
import { join } from 'node:path';

/** What Docker's init layer holds: mount points and placeholders the runtime bind-mounts over. */
const DIRS = ['/dev/pts', '/dev/shm', '/proc', '/sys'];
const FILES = ['/.dockerenv', '/etc/resolv.conf', '/etc/hosts', '/etc/hostname', '/dev/console'];
const SYMLINKS: Array<[string, string]> = [['/etc/mtab', '/proc/mounts']];

/**
 * Make `rel` (absolute inside root) a directory chain of real directories. A component the image made a
 * symlink or a file is replaced (in the init layer only: the image stays as it is), so an image can never
 * redirect these writes outside the container root. `made` holds the chains already ensured by this setup
 * (/etc serves four placeholders), as a create pays for every lstat.
 */
function ensureDirs(root: string, rel: string, made: Set<string>): void {
  let cur = root;
  for (const part of rel.split('/').filter(Boolean)) {
    cur = join(cur, part);
    if (made.has(cur)) continue;
    made.add(cur);
    const st = lstatSync(cur, { throwIfNoEntry: false });
    if (st?.isDirectory()) continue;
    if (st) unlinkSync(cur);
    mkdirSync(cur, { mode: 0o755 });
  }
}

/**
 * As Docker's init: whatever the image has at a placeholder's path is unlinked so the placeholder can be
 * made (in the init layer: the image itself is untouched); a directory cannot be unlinked and stays.
 * Returns whether the placeholder is to be made.
 */
function clearLeaf(path: string): boolean {
  const st = lstatSync(path, { throwIfNoEntry: false });
  if (st?.isDirectory()) return false;
  if (st) unlinkSync(path);
  return true;
}

export async function setupInitLayer(root: string, uid = 0, gid = 0): Promise<void> {
  const made = new Set<string>();
  for (const d of DIRS) ensureDirs(root, d, made);
  for (const f of FILES) {
    const parent = f.slice(0, f.lastIndexOf('/'));
    ensureDirs(root, parent, made);
    const path = join(root, f);
    if (!clearLeaf(path)) continue;
    const fd = openSync(path, 'wx', 0o755);
    try {
      if (uid !== 0 || gid !== 0) fchownSync(fd, uid, gid);
    } finally {
      closeSync(fd);
    }
  }
  for (const [link, target] of SYMLINKS) {
    const path = join(root, link);
    ensureDirs(root, link.slice(0, link.lastIndexOf('/')), made);
    if (clearLeaf(path)) symlinkSync(target, path);
  }
}
