import {
  chmodSync,
  constants as C,
  copyFileSync,
  lchownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readlinkSync,
  symlinkSync,
  type BigIntStats,
} from 'node:fs';
import { devMajor, devMinor } from '../archive/device-number.js';
import { isErrno } from '../errors.js';
import { native } from '../native/native.js';

/**
 * A full copy of `src` at `dst` (created, or an existing empty directory that takes src's metadata):
 * types, content (reflinked where the filesystem can), modes with setuid/setgid/sticky, numeric owners,
 * every xattr (trusted.overlay.* included, so overlay layouts copy faithfully), nanosecond mtimes,
 * hardlink groups, devices, fifos, sockets and symlinks (never followed). The copy is made with
 * synchronous syscalls: per-file metadata is cheaper than a threadpool round trip.
 */
export async function copyTree(src: string, dst: string): Promise<void> {
  const copier = new TreeCopier();
  copier.copy(src, dst, lstatSync(src, { bigint: true }), true);
  copier.finish();
}

class TreeCopier {
  /** dev:ino of multiply-linked sources → their first copy. */
  private readonly links = new Map<string, string>();
  /** Directory times are set once nothing more is written into them, deepest first. */
  private readonly dirs: Array<[string, BigIntStats]> = [];

  copy(src: string, dst: string, st: BigIntStats, top: boolean): void {
    if (st.isDirectory()) {
      try {
        mkdirSync(dst, 0o700);
      } catch (e) {
        if (!(top && isErrno(e, 'EEXIST') && lstatSync(dst).isDirectory())) throw e;
      }
      for (const name of readdirSync(src)) this.copy(`${src}/${name}`, `${dst}/${name}`, lstatSync(`${src}/${name}`, { bigint: true }), false);
      this.metadata(src, dst, st);
      this.dirs.push([dst, st]);
      return;
    }
    const key = `${st.dev}:${st.ino}`;
    if (st.nlink > 1n) {
      const first = this.links.get(key);
      if (first !== undefined) {
        linkSync(first, dst);
        return;
      }
      this.links.set(key, dst);
    }
    if (st.isFile()) copyFileSync(src, dst, C.COPYFILE_EXCL | C.COPYFILE_FICLONE);
    else if (st.isSymbolicLink()) symlinkSync(readlinkSync(src), dst);
    else native.mknod(dst, (Number(st.mode) & C.S_IFMT) | 0o600, devMajor(st.rdev), devMinor(st.rdev));
    this.metadata(src, dst, st);
    setTimes(dst, st);
  }

  finish(): void {
    for (let i = this.dirs.length - 1; i >= 0; i--) setTimes(this.dirs[i][0], this.dirs[i][1]);
  }

  private metadata(src: string, dst: string, st: BigIntStats): void {
    // chown clears setuid and security.capability: owner, then xattrs, then mode. dst was just created
    // by this copy, so chmod (which follows links) reaches it and symlinks are skipped.
    lchownSync(dst, Number(st.uid), Number(st.gid));
    for (const name of native.llistxattr(src)) {
      const value = native.lgetxattr(src, name);
      if (value !== null) native.lsetxattr(dst, name, value);
    }
    if (!st.isSymbolicLink()) chmodSync(dst, Number(st.mode & 0o7777n));
  }
}

function setTimes(path: string, st: BigIntStats): void {
  const ns = 1_000_000_000n;
  native.lutimes(path, Number(st.atimeNs / ns), Number(st.atimeNs % ns), Number(st.mtimeNs / ns), Number(st.mtimeNs % ns));
}
