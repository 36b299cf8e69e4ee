import * as fs from 'node:fs';
import type { Op } from './sequence.js';

const errno = (code: string) => Object.assign(new Error(code), { code });

/** Names a lookup finds: overlayfs lists the whiteouts of a lower directory that merges with nothing. */
function visibleNames(dir: string): string[] {
  return fs.readdirSync(dir).filter((n) => fs.lstatSync(`${dir}/${n}`, { throwIfNoEntry: false }) !== undefined);
}

/**
 * GNU cp -a of one tree (owners, modes, times, symlinks, hardlinks inside the tree kept): what mv
 * does when rename answers EXDEV. Synchronous, in the kernel-side worker.
 */
function copyTree(src: string, dst: string, links: Map<string, string>): void {
  const st = fs.lstatSync(src);
  if (st.isDirectory()) {
    fs.mkdirSync(dst);
    for (const n of visibleNames(src)) copyTree(`${src}/${n}`, `${dst}/${n}`, links);
  } else if (st.isSymbolicLink()) {
    fs.symlinkSync(fs.readlinkSync(src), dst);
  } else {
    const key = `${st.dev}:${st.ino}`;
    const first = links.get(key);
    if (first !== undefined) return fs.linkSync(first, dst);
    if (st.nlink > 1) links.set(key, dst);
    fs.copyFileSync(src, dst);
  }
  fs.lchownSync(dst, st.uid, st.gid);
  if (!st.isSymbolicLink()) fs.chmodSync(dst, st.mode & 0o7777);
  fs.lutimesSync(dst, st.atime, st.mtime);
}

/**
 * mv's answer to EXDEV (the kernel refusing to rename a lower or merged directory without
 * redirect_dir), which is strata's documented behaviour: a non-directory or non-empty directory target
 * refuses, else the tree is copied and the source removed.
 */
function moveByCopy(from: string, to: string): void {
  const dst = fs.lstatSync(to, { throwIfNoEntry: false });
  if (dst !== undefined && !dst.isDirectory()) throw errno('ENOTDIR');
  if (dst !== undefined && visibleNames(to).length > 0) throw errno('ENOTEMPTY');
  if (dst !== undefined) fs.rmdirSync(to);
  copyTree(from, to, new Map());
  fs.rmSync(from, { recursive: true, force: true });
}

/** Apply one operation to the kernel overlay mount, seen as `/` (the worker is chrooted into it). */
export function kernelOp(o: Op): void {
  const P = (x: string) => '/' + x;
  switch (o.op) {
    case 'write':
      return fs.writeFileSync(P(o.p), o.data);
    case 'append':
      return fs.appendFileSync(P(o.p), o.data);
    case 'truncate':
      return fs.truncateSync(P(o.p), o.len);
    case 'mkdir':
      return void fs.mkdirSync(P(o.p));
    case 'rmdir':
      return fs.rmdirSync(P(o.p));
    case 'unlink':
      return fs.unlinkSync(P(o.p));
    case 'link':
      return fs.linkSync(P(o.p), P(o.q));
    case 'symlink':
      return fs.symlinkSync(o.target, P(o.p));
    case 'chmod':
      return fs.chmodSync(P(o.p), o.mode);
    case 'chown':
      return fs.chownSync(P(o.p), o.uid, o.gid);
    case 'utimes':
      return fs.utimesSync(P(o.p), o.t, o.t);
    case 'rename':
      try {
        return fs.renameSync(P(o.p), P(o.q));
      } catch (e) {
        if ((e as { code?: string }).code !== 'EXDEV') throw e;
        return moveByCopy(P(o.p), P(o.q));
      }
  }
}
