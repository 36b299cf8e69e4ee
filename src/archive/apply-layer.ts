import {
  chmodSync,
  closeSync,
  constants as C,
  fchmodSync,
  fchownSync,
  lchownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { corrupt, internal, isErrno, StrataError } from '../errors.js';
import { native } from '../native/native.js';
import type { TarHeader } from './tar/tar-header.js';
import { readTar, type TarEntry, type TarLimits } from './tar/tar-reader.js';
import { cleanEntryName, relBasename, relDirname, SafeParents } from './root-path.js';
import { OVERLAY_OPAQUE_XATTR, OVERLAY_XATTR_PREFIX, WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX } from './whiteout.js';

/** How deletions land on disk: overlay's char 0:0 / opaque xattr, or by removing the files (every other driver). */
export type WhiteoutFormat = 'overlay' | 'naive';

export interface ApplyOptions {
  whiteouts: WhiteoutFormat;
  /** Called with every entry before it is applied (the layer store records headerBytes for byte-exact re-export). */
  onEntry?: (e: TarEntry) => void;
  onTrailer?: (b: Buffer) => void;
  limits?: TarLimits;
}

const FILE_FLAGS = C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW;
const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW;
const NODE_TYPE = { char: C.S_IFCHR, block: C.S_IFBLK, fifo: C.S_IFIFO } as const;
const OPAQUE_VALUE = Buffer.from('y');
const PATH_MAX = 4096;

/**
 * Apply an uncompressed OCI layer tar onto root (Docker's UnpackLayer); returns the total size of file
 * content applied. The root belongs to this call while it runs: nothing else writes there, so a parent
 * chain checked once by lstat stays valid until this call itself replaces a component.
 */
export async function applyLayer(root: string, tar: AsyncIterable<Buffer>, opts: ApplyOptions): Promise<{ size: number }> {
  const applier = new Applier(root, opts.whiteouts);
  for await (const entry of readTar(tar, { limits: opts.limits, onTrailer: opts.onTrailer })) {
    opts.onEntry?.(entry);
    try {
      const pending = applier.apply(entry);
      if (pending) await pending;
    } catch (e) {
      throw explain(e, entry.header.name);
    }
  }
  applier.finish();
  return { size: applier.size };
}

// Per-entry metadata uses synchronous syscalls: a threadpool round trip costs more than the syscall itself.
class Applier {
  size = 0;
  private readonly parents: SafeParents;
  /** Naive format: what this layer wrote, which an opaque directory keeps. */
  private readonly unpacked: Set<string> | null;
  /** Directory times are set last, deepest first, once nothing is written into them any more. */
  private readonly dirTimes = new Map<string, TarHeader>();
  private readonly rootBytes: number;

  constructor(
    private readonly root: string,
    private readonly format: WhiteoutFormat,
  ) {
    this.parents = new SafeParents(root);
    this.rootBytes = Buffer.byteLength(root) + 1;
    this.unpacked = format === 'naive' ? new Set() : null;
  }

  apply(entry: TarEntry): Promise<void> | void {
    const h = entry.header;
    const rel = cleanEntryName(h.name);
    // Fail before creating a deep chain of parents the kernel would refuse at its end anyway.
    if (this.rootBytes + Buffer.byteLength(rel) >= PATH_MAX) throw corrupt(`name is too long for a path here (${rel.length} characters)`);
    const base = relBasename(rel);
    if (base.startsWith(WHITEOUT_PREFIX)) return this.whiteout(rel, base, h);
    if (rel === '' && h.type !== 'directory') throw corrupt(`a ${h.type} cannot replace the layer root`);
    const path = rel === '' ? this.root : this.parents.ensure(relDirname(rel)) + '/' + base;
    this.unpacked?.add(rel);
    switch (h.type) {
      case 'file':
        return this.file(rel, path, entry);
      case 'directory':
        return this.directory(rel, path, h);
      case 'symlink':
        this.create(rel, path, () => symlinkSync(h.linkname, path));
        return this.pathMetadata(path, h, false);
      case 'hardlink':
        return this.hardlink(rel, path, h);
      case 'char':
      case 'block':
      case 'fifo':
        this.create(rel, path, () => native.mknod(path, NODE_TYPE[h.type as keyof typeof NODE_TYPE] | h.mode, h.devmajor, h.devminor));
        return this.pathMetadata(path, h, true);
    }
  }

  finish(): void {
    const dirs = [...this.dirTimes].sort((a, b) => depth(b[0]) - depth(a[0]));
    for (const [rel, h] of dirs) setTimes(rel === '' ? this.root : this.root + '/' + rel, h);
  }

  private file(rel: string, path: string, entry: TarEntry): Promise<void> | void {
    const h = entry.header;
    let fd: number;
    try {
      fd = openSync(path, FILE_FLAGS, 0o600);
    } catch (e) {
      if (!isErrno(e, 'EEXIST')) throw e;
      this.remove(rel, path);
      fd = openSync(path, FILE_FLAGS, 0o600);
    }
    if (h.size === 0) return this.closeFile(fd, path, h);
    const whole = entry.bufferedBody();
    if (whole === null) return this.writeBody(fd, path, entry);
    try {
      writeAll(fd, whole);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    this.closeFile(fd, path, h);
    this.size += h.size;
  }

  private async writeBody(fd: number, path: string, entry: TarEntry): Promise<void> {
    try {
      for await (const chunk of entry.body()) writeAll(fd, chunk);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    this.closeFile(fd, path, entry.header);
    this.size += entry.header.size;
  }

  private closeFile(fd: number, path: string, h: TarHeader): void {
    try {
      this.ownerXattrsMode(fd, path, h);
    } finally {
      closeSync(fd);
    }
    setTimes(path, h);
  }

  /** chown clears setuid and security.capability: owner first, then xattrs, then the mode. */
  private ownerXattrsMode(fd: number, path: string, h: TarHeader): void {
    fchownSync(fd, h.uid, h.gid);
    this.xattrs(path, h);
    fchmodSync(fd, h.mode);
  }

  private directory(rel: string, path: string, h: TarHeader): void {
    if (rel !== '') {
      try {
        mkdirSync(path, 0o700);
      } catch (e) {
        if (!isErrno(e, 'EEXIST')) throw e;
        // An existing directory keeps its content and takes the entry's metadata; anything else is replaced.
        if (!lstatSync(path).isDirectory()) {
          this.remove(rel, path);
          mkdirSync(path, 0o700);
        }
      }
    }
    const fd = openSync(path, DIR_FLAGS);
    try {
      this.ownerXattrsMode(fd, path, h);
    } finally {
      closeSync(fd);
    }
    this.dirTimes.set(rel, h);
  }

  private hardlink(rel: string, path: string, h: TarHeader): void {
    const target = cleanEntryName(h.linkname);
    if (target === '') throw corrupt(`hardlink to the layer root`);
    // The target's parents must be real directories of this root: a link through a symlink could reach any host file.
    const targetPath = this.parents.check(relDirname(target)) + '/' + relBasename(target);
    const st = lstatSync(targetPath, { throwIfNoEntry: false });
    if (st === undefined) throw corrupt(`hardlink target ${h.linkname} does not exist`);
    if (st.isDirectory()) throw corrupt(`hardlink target ${h.linkname} is a directory`);
    if (target === rel) return;
    // link(2) does not follow a symlink target: linking to a symlink links the symlink itself.
    this.create(rel, path, () => linkSync(targetPath, path));
  }

  /** Metadata for nodes that cannot be opened without side effects (symlinks, devices, fifos): by path, never following. */
  private pathMetadata(path: string, h: TarHeader, chmod: boolean): void {
    lchownSync(path, h.uid, h.gid);
    this.xattrs(path, h);
    // The node was just created by this call, so the path names it and not a link (chmod(2) would follow one).
    if (chmod) chmodSync(path, h.mode);
    setTimes(path, h);
  }

  private xattrs(path: string, h: TarHeader): void {
    for (const [name, value] of h.xattrs) {
      if (name.startsWith(OVERLAY_XATTR_PREFIX)) continue;
      try {
        native.lsetxattr(path, name, value);
      } catch (e) {
        if (!isErrno(e, 'ENOTSUP')) throw e;
      }
    }
  }

  private whiteout(rel: string, base: string, h: TarHeader): void {
    const relDir = relDirname(rel);
    if (base === WHITEOUT_OPAQUE) return this.opaque(relDir);
    if (base.startsWith(WHITEOUT_META_PREFIX)) return; // union metadata (AUFS .wh..wh.plnk ...), not content
    const name = base.slice(WHITEOUT_PREFIX.length);
    if (name === '' || name === '.' || name === '..') throw corrupt(`invalid whiteout entry`);
    const targetRel = relDir === '' ? name : relDir + '/' + name;
    const path = this.parents.ensure(relDir) + '/' + name;
    if (lstatSync(path, { throwIfNoEntry: false }) !== undefined) this.remove(targetRel, path);
    if (this.format === 'naive') return;
    native.mknod(path, C.S_IFCHR, 0, 0);
    if (h.uid !== 0 || h.gid !== 0) lchownSync(path, h.uid, h.gid);
  }

  private opaque(relDir: string): void {
    const dir = this.parents.ensure(relDir);
    if (this.format === 'overlay') native.lsetxattr(dir, OVERLAY_OPAQUE_XATTR, OPAQUE_VALUE);
    else this.prune(relDir, dir);
  }

  /** Naive opaque directory: remove what lower layers put there, keep what this layer wrote. */
  private prune(relDir: string, dir: string): void {
    for (const d of readdirSync(dir, { withFileTypes: true })) {
      const rel = relDir === '' ? d.name : relDir + '/' + d.name;
      const path = dir + '/' + d.name;
      if (!this.unpacked!.has(rel)) this.remove(rel, path);
      else if (d.isDirectory()) this.prune(rel, path);
    }
  }

  /** Make a node, replacing whatever is in the way. */
  private create(rel: string, path: string, make: () => void): void {
    try {
      make();
    } catch (e) {
      if (!isErrno(e, 'EEXIST')) throw e;
      this.remove(rel, path);
      make();
    }
  }

  private remove(rel: string, path: string): void {
    if (lstatSync(path).isDirectory()) {
      rmSync(path, { recursive: true, force: true });
      this.parents.forget(rel);
      const under = rel + '/';
      for (const k of this.dirTimes.keys()) if (k === rel || k.startsWith(under)) this.dirTimes.delete(k);
    } else {
      unlinkSync(path);
    }
  }
}

function writeAll(fd: number, chunk: Buffer): void {
  for (let off = 0; off < chunk.length; ) off += writeSync(fd, chunk, off, chunk.length - off);
}

function setTimes(path: string, h: TarHeader): void {
  const a = h.atime ?? h.mtime;
  native.lutimes(path, a.sec, a.nsec, h.mtime.sec, h.mtime.nsec);
}

function depth(rel: string): number {
  let n = rel === '' ? 0 : 1;
  for (let i = rel.indexOf('/'); i >= 0; i = rel.indexOf('/', i + 1)) n++;
  return n;
}

/** Errors from the filesystem mean the archive asks for something impossible here; name the entry. */
const archiveErrnos = new Set(['ENOTDIR', 'EISDIR', 'EEXIST', 'ENOENT', 'ELOOP', 'EINVAL', 'ENAMETOOLONG', 'EMLINK', 'EPERM', 'EXDEV']);

function explain(e: unknown, name: string): unknown {
  const where = `layer entry ${JSON.stringify(name)}`;
  if (e instanceof StrataError) return new StrataError(e.code, `${where}: ${e.message}`, { cause: e });
  if (isErrno(e)) {
    const msg = `${where}: ${e.message}`;
    return archiveErrnos.has(e.code!) ? corrupt(msg, e) : internal(msg, e);
  }
  return e;
}
