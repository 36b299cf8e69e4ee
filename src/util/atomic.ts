import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { dirname, join, basename } from 'node:path';

// Synchronous on purpose: these touch small metadata files, and a round trip through the threadpool costs
// ~10x the syscall itself (a container create is a few dozen of them).

/** fsync a directory so a rename inside it survives a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  fsyncDirSync(dir);
}

export function fsyncDirSync(dir: string): void {
  const fd = openSync(dir, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** A sibling temporary name: same filesystem, so the final rename is atomic. */
export function tempSibling(path: string): string {
  return join(dirname(path), `.tmp-${basename(path)}-${randomBytes(6).toString('hex')}`);
}

/**
 * Write a small file so readers see either the old content or the whole new one: temp, fsync, rename,
 * fsync dir (unless `syncDir` is false: a crash may then leave the previous state, never a torn file). For
 * metadata only (the write blocks the event loop).
 */
export async function writeFileAtomic(path: string, data: string | Buffer, mode = 0o644, { syncDir = true } = {}): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = tempSibling(path);
  const fd = openSync(tmp, 'wx', mode);
  try {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    for (let off = 0; off < buf.length; ) off += writeSync(fd, buf, off);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  renameSync(tmp, path);
  if (syncDir) fsyncDirSync(dirname(path));
}
