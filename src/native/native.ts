import { createRequire } from 'node:module';

/** Syscalls Node lacks, from our own N-API addon (src/native/strata_native.c, built by `npm ci`). */
export interface Native {
  mknod(path: string, mode: number, major: number, minor: number): void;
  lsetxattr(path: string, name: string, value: Buffer): void;
  /** null when the attribute is absent or the filesystem has no xattrs */
  lgetxattr(path: string, name: string): Buffer | null;
  llistxattr(path: string): string[];
  lremovexattr(path: string, name: string): void;
  lutimes(path: string, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): void;
  /** cwd, when given, is entered on a private thread so relative lowerdirs resolve against it */
  mount(source: string | null, target: string, fstype: string | null, flags: number, data: string | null, cwd?: string): void;
  umount(target: string, flags: number): void;
  statfs(path: string): { type: number; bsize: number; blocks: number; bfree: number; bavail: number; files: number; ffree: number };
  /**
   * chroot(2) of the whole process; the cwd stays where it was, so relative paths still reach outside
   * (the differential test's kernel-side worker moves between overlay mounts this way).
   */
  chroot(path: string): void;
  /** false only when LOCK_NB was given and another holder has the lock */
  flock(fd: number, operation: number): boolean;
  /** Start writing the range's dirty pages to disk without waiting (sync_file_range WRITE): a later fsync has less to do. */
  startWriteback(fd: number, offset: number, length: number): void;
  /**
   * Create nodes on a worker thread, in order, never following a symlink. meta holds CREATE_META_FIELDS numbers
   * per node: kind (CREATE_KIND), mode, uid, gid, atime sec, atime nsec, mtime sec, mtime nsec. A file is
   * opened O_EXCL and filled with its body; a symlink points to its body's bytes; a directory already there is
   * kept. Something else in the way is replaced, except a directory in the way of a file or symlink (EEXIST).
   * Then owner, mode (not for symlinks) and nanosecond times (not for directories, whose times the caller sets
   * last). Rejects with an errno Error whose `index` names the node that failed; nodes after it are untouched.
   * Bodies must not change until it settles.
   */
  createNodes(paths: string[], bodies: Buffer[], meta: Float64Array): Promise<void>;
  /**
   * Fill each body with the first body.length bytes of its file, on a worker thread, never following a symlink.
   * A file shorter than its body fails with ENODATA; rejects like createNodes (`index` names the file).
   */
  readFiles(paths: string[], bodies: Buffer[]): Promise<void>;
  /**
   * One directory's entries, unsorted, with what lstat, llistxattr/lgetxattr and readlink say of each (never
   * following a symlink), read on a worker thread. Rejects with an errno Error naming the path that failed.
   */
  scanDir(path: string): Promise<DirScan>;
  /** A running SHA-256 (OpenSSL's, Node's own) whose updates run on a worker thread. */
  sha256New(): Sha256Handle;
  /** Hash the chunks, in order, on a worker thread; one update at a time per handle, chunks unchanged until it settles. */
  sha256Update(h: Sha256Handle, chunks: Buffer[]): Promise<void>;
  /** The digest as lowercase hex; the handle cannot be used after this. */
  sha256Digest(h: Sha256Handle): string;
}

export interface DirScan {
  names: string[];
  /** SCAN_FIELDS numbers per entry: mode (with the type bits), uid, gid, size, nlink, rdev, mtime sec, mtime nsec. */
  stats: Float64Array;
  /** Per entry: dev, ino. */
  ids: BigUint64Array;
  /** Per entry: every xattr (name, value), or null for none. */
  xattrs: Array<Array<[string, Buffer]> | null>;
  /** Per entry: a symlink's target, else null. */
  links: Array<string | null>;
}

export const SCAN_FIELDS = 8;

declare const sha256Brand: unique symbol;
export type Sha256Handle = { readonly [sha256Brand]: true };

export const CREATE_META_FIELDS = 8;
export const CREATE_KIND = { file: 0, directory: 1, symlink: 2 } as const;

export const LOCK_SH = 1;
export const LOCK_EX = 2;
export const LOCK_NB = 4;
export const LOCK_UN = 8;
export const MNT_DETACH = 2;
export const MS_RDONLY = 1;

const require = createRequire(import.meta.url);
export const native: Native = require('../../build/Release/strata_native.node') as Native;
