import { constants as C, lstatSync, readdirSync, readlinkSync, type BigIntStats, type Stats } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { Readable, Writable } from 'node:stream';
import { asUnionError, fsError } from './fs-error.js';
import type { Branch } from './branch-spec.js';
import { LowerIndex, WH_OPAQUE, WH_PREFIX, type EntryKind } from './lower-index.js';
import { UnionFileHandle } from './union-file-handle.js';
import { native } from '../native/native.js';
import { OVERLAY_XATTR_PREFIX } from '../archive/whiteout.js';
import { xattrFailureTolerated } from '../archive/apply-rules.js';

/** Linux' MAXSYMLINKS, NAME_MAX and PATH_MAX. */
const MAX_SYMLINKS = 40;
const NAME_MAX = 255;
const PATH_MAX = 4096;

type Time = number | string | Date;

/** One visible name of the union, resolved (no symlink above it). */
interface Found {
  /** Path relative to the union root ('' = root). */
  rel: string;
  /** The branch it is seen in (0 is the topmost, the only one ever written). */
  branch: number;
  host: string;
  kind: EntryKind;
  /** A directory that exists in the upper branch. */
  upperDir: boolean;
  /** A directory whose lower branches contribute children. */
  lowerDir: boolean;
  /** Some lower branch shows this name: removing it needs a whiteout. */
  lowerBelow: boolean;
}

interface Resolved {
  parent: Found;
  name: string;
  found: Found | null;
  /** The path's last component is not a name ('/' alone, `.` or `..`): calls that create or remove a name refuse it, each with the kernel's code. */
  last: 'name' | 'root' | 'dot' | 'dotdot';
}

/** The kind of the path's last component, as the kernel's path walk classifies it (trailing slashes ignored). */
function lastComponent(path: string): Resolved['last'] {
  const c = path.split('/').filter((x) => x !== '').pop();
  return c === undefined ? 'root' : c === '.' ? 'dot' : c === '..' ? 'dotdot' : 'name';
}

/** The kernel's answer when a call that needs a name gets `/`, `.` or `..` instead. */
function refuseNonName(r: Resolved, codes: Record<Exclude<Resolved['last'], 'name'>, string>, syscall: string, path: string, dest?: string): void {
  if (r.last !== 'name') throw fsError(codes[r.last], syscall, path, dest);
}

const FLAGS: Record<string, number> = {
  r: C.O_RDONLY,
  rs: C.O_RDONLY | C.O_SYNC,
  sr: C.O_RDONLY | C.O_SYNC,
  'r+': C.O_RDWR,
  'rs+': C.O_RDWR | C.O_SYNC,
  'sr+': C.O_RDWR | C.O_SYNC,
  w: C.O_TRUNC | C.O_CREAT | C.O_WRONLY,
  wx: C.O_TRUNC | C.O_CREAT | C.O_WRONLY | C.O_EXCL,
  xw: C.O_TRUNC | C.O_CREAT | C.O_WRONLY | C.O_EXCL,
  'w+': C.O_TRUNC | C.O_CREAT | C.O_RDWR,
  'wx+': C.O_TRUNC | C.O_CREAT | C.O_RDWR | C.O_EXCL,
  'xw+': C.O_TRUNC | C.O_CREAT | C.O_RDWR | C.O_EXCL,
  a: C.O_APPEND | C.O_CREAT | C.O_WRONLY,
  ax: C.O_APPEND | C.O_CREAT | C.O_WRONLY | C.O_EXCL,
  xa: C.O_APPEND | C.O_CREAT | C.O_WRONLY | C.O_EXCL,
  as: C.O_APPEND | C.O_CREAT | C.O_WRONLY | C.O_SYNC,
  sa: C.O_APPEND | C.O_CREAT | C.O_WRONLY | C.O_SYNC,
  'a+': C.O_APPEND | C.O_CREAT | C.O_RDWR,
  'ax+': C.O_APPEND | C.O_CREAT | C.O_RDWR | C.O_EXCL,
  'xa+': C.O_APPEND | C.O_CREAT | C.O_RDWR | C.O_EXCL,
  'as+': C.O_APPEND | C.O_CREAT | C.O_RDWR | C.O_SYNC,
  'sa+': C.O_APPEND | C.O_CREAT | C.O_RDWR | C.O_SYNC,
};

function parseFlags(flags: string | number | undefined): number {
  if (flags === undefined) return C.O_RDONLY;
  if (typeof flags === 'number') return flags;
  const f = FLAGS[flags];
  if (f === undefined) throw Object.assign(new TypeError(`invalid open flags ${JSON.stringify(flags)}`), { code: 'ERR_INVALID_ARG_VALUE' });
  return f;
}

function kindOf(st: Stats): EntryKind {
  return st.isDirectory() ? 'dir' : st.isFile() ? 'file' : st.isSymbolicLink() ? 'symlink' : 'other';
}

function lstatOrNull(p: string): Stats | null {
  try {
    // No exception for the common miss (a whiteout or opaque marker that is not there): building one costs more than the syscall.
    return lstatSync(p, { throwIfNoEntry: false }) ?? null;
  } catch (e) {
    // ENAMETOOLONG: `.wh.` + a name of 252 to 255 bytes, a whiteout that cannot exist (as in AUFS).
    if (['ENOENT', 'ENOTDIR', 'ENAMETOOLONG'].includes((e as { code?: string }).code ?? '')) return null;
    throw e;
  }
}

function sameInode(a: string, b: string): boolean {
  const [x, y] = [lstatSync(a), lstatSync(b)];
  return x.dev === y.dev && x.ino === y.ino;
}

async function unlinkIfPresent(p: string): Promise<void> {
  try {
    await fsp.unlink(p);
  } catch (e) {
    if ((e as { code?: string }).code !== 'ENOENT' && (e as { code?: string }).code !== 'ENAMETOOLONG') throw e;
  }
}

/** A directory entry of the union, shaped like node:fs's Dirent. */
export class UnionDirent {
  constructor(
    readonly name: string,
    private readonly kind: EntryKind,
    readonly parentPath: string,
  ) {}
  get path(): string {
    return this.parentPath;
  }
  isFile(): boolean {
    return this.kind === 'file';
  }
  isDirectory(): boolean {
    return this.kind === 'dir';
  }
  isSymbolicLink(): boolean {
    return this.kind === 'symlink';
  }
  isBlockDevice(): boolean {
    return false;
  }
  isCharacterDevice(): boolean {
    return false;
  }
  isFIFO(): boolean {
    return false;
  }
  isSocket(): boolean {
    return false;
  }
}

/**
 * Metadata reads (lookups, listings, stat) are synchronous syscalls: each costs microseconds, a
 * threadpool round trip about ten times more; file data still moves asynchronously.
 *
 * A union of branches, topmost first, with the node:fs/promises surface; paths are absolute inside the
 * union. Only the topmost branch is ever written, and only when it is `rw`: a first write to a file
 * of a lower branch copies it up there; deletions of lower names leave `.wh.<name>` whiteouts; a
 * directory created over a whiteout gets `.wh..wh..opq`. Lower branches (every branch below the top,
 * whatever its mode) are never modified.
 */
export class UnionFs {
  private readonly paths: string[];
  private readonly writable: boolean;
  private readonly index: LowerIndex;
  private readonly root: Found;

  constructor(readonly branches: readonly Branch[]) {
    this.paths = branches.map((b) => b.path);
    this.writable = branches[0]!.mode === 'rw';
    const lowers = branches.map((_, i) => i).filter((i) => i > 0);
    this.index = new LowerIndex(this.paths, lowers);
    this.root = { rel: '', branch: 0, host: this.paths[0]!, kind: 'dir', upperDir: true, lowerDir: lowers.length > 0, lowerBelow: false };
  }

  /** Reads the top branch's root opacity once (an opaque root hides every lower branch). */
  async init(): Promise<this> {
    const st = await fsp.lstat(this.paths[0]!);
    if (!st.isDirectory()) throw fsError('ENOTDIR', 'open', this.paths[0]!);
    if (lstatOrNull(`${this.paths[0]}/${WH_OPAQUE}`)) this.root.lowerDir = false;
    return this;
  }

  // ---- lookup ----

  private upperHost(rel: string): string {
    return rel === '' ? this.paths[0]! : `${this.paths[0]}/${rel}`;
  }

  private child(dir: Found, name: string): Found | null {
    if (name.startsWith(WH_PREFIX)) return null;
    const rel = dir.rel === '' ? name : `${dir.rel}/${name}`;
    const up = dir.upperDir ? lstatOrNull(this.upperHost(rel)) : null;
    let whited = false;
    if (up === null && dir.upperDir && dir.lowerDir) whited = lstatOrNull(`${this.upperHost(dir.rel)}/${WH_PREFIX}${name}`) !== null;
    const low = dir.lowerDir && !whited ? this.index.dir(dir.rel).get(name) : undefined;
    if (up !== null) {
      const kind = kindOf(up);
      const lowerDir = kind === 'dir' && low?.kind === 'dir' && lstatOrNull(`${this.upperHost(rel)}/${WH_OPAQUE}`) === null;
      return { rel, branch: 0, host: this.upperHost(rel), kind, upperDir: kind === 'dir', lowerDir, lowerBelow: low !== undefined };
    }
    if (low === undefined) return null;
    return { rel, branch: low.branch, host: `${this.paths[low.branch]}/${rel}`, kind: low.kind, upperDir: false, lowerDir: low.kind === 'dir', lowerBelow: true };
  }

  /** Walk `path` component by component, following symlinks inside the union (the last one only when `follow`). */
  private resolve(path: string, follow: boolean, syscall: string): Resolved {
    if (typeof path !== 'string') throw Object.assign(new TypeError('The "path" argument must be of type string'), { code: 'ERR_INVALID_ARG_TYPE' });
    if (path.includes('\0')) throw Object.assign(new TypeError('path must be a string without null bytes'), { code: 'ERR_INVALID_ARG_VALUE' });
    if (path.length >= PATH_MAX) throw fsError('ENAMETOOLONG', syscall, path);
    const lastKind = lastComponent(path);
    const mustBeDir = path.endsWith('/') && path.replace(/\/+$/, '') !== '';
    if (mustBeDir) follow = true;
    let comps = path.split('/').filter((c) => c !== '' && c !== '.');
    const stack: Found[] = [this.root];
    let links = 0;
    let name = '';
    while (comps.length > 0) {
      const c = comps.shift()!;
      if (c.length > NAME_MAX) throw fsError('ENAMETOOLONG', syscall, path);
      const cur = stack[stack.length - 1]!;
      if (cur.kind !== 'dir') throw fsError('ENOTDIR', syscall, path);
      if (c === '..') {
        if (stack.length > 1) stack.pop();
        continue;
      }
      const isLast = comps.length === 0;
      const f = this.child(cur, c);
      if (f === null) {
        if (isLast) return { parent: cur, name: c, found: null, last: lastKind };
        throw fsError('ENOENT', syscall, path);
      }
      if (f.kind === 'symlink' && (!isLast || follow)) {
        if (++links > MAX_SYMLINKS) throw fsError('ELOOP', syscall, path);
        const target = readlinkSync(f.host);
        if (target === '') throw fsError('ENOENT', syscall, path);
        if (target.startsWith('/')) stack.length = 1;
        comps = [...target.split('/').filter((x) => x !== '' && x !== '.'), ...comps];
        continue;
      }
      if (isLast) {
        if (mustBeDir && f.kind !== 'dir') throw fsError('ENOTDIR', syscall, path);
        return { parent: cur, name: c, found: f, last: lastKind };
      }
      stack.push(f);
      name = c;
    }
    // The path ended on a directory reached through `..`, `.` or a symlink to a directory.
    const found = stack[stack.length - 1]!;
    const parent = stack.length > 1 ? stack[stack.length - 2]! : this.root;
    name = found.rel.slice(found.rel.lastIndexOf('/') + 1);
    return { parent, name, found, last: lastKind };
  }

  private existing(path: string, follow: boolean, syscall: string): Found {
    const r = this.resolve(path, follow, syscall);
    if (r.found === null) throw fsError('ENOENT', syscall, path);
    return r.found;
  }

  // ---- copy-up and whiteouts ----

  private requireWritable(syscall: string, path: string): void {
    if (!this.writable) throw fsError('EROFS', syscall, path);
  }

  private relOf(parent: Found, name: string): string {
    return parent.rel === '' ? name : `${parent.rel}/${name}`;
  }

  /**
   * Copy the metadata of `from` (whose lstat is `st`) onto the host path `p`, never following a symlink: owner,
   * xattrs, mode, times, as overlayfs's copy-up keeps them (a file's capabilities, say). Owner first, as chown
   * drops security.capability and setuid; overlayfs's own xattrs stay behind (in a lower branch they describe it).
   */
  private async copyMeta(p: string, from: string, st: Stats): Promise<void> {
    await fsp.lchown(p, st.uid, st.gid);
    for (const name of native.llistxattr(from)) {
      if (name.startsWith(OVERLAY_XATTR_PREFIX)) continue;
      const value = native.lgetxattr(from, name);
      if (value === null) continue;
      try {
        native.lsetxattr(p, name, value);
      } catch (e) {
        // As a layer apply: without root, trusted.* and security.* cannot be written, and stay behind.
        if (!xattrFailureTolerated(e, process.getuid?.() !== 0)) throw e;
      }
    }
    if (!st.isSymbolicLink()) await fsp.chmod(p, st.mode & 0o7777);
    await fsp.lutimes(p, st.atime, st.mtime);
  }

  /** Make the directory `rel` (a resolved, visible directory) exist in the upper branch, copying up its ancestors. */
  private async ensureUpperDir(rel: string): Promise<void> {
    if (rel === '') return;
    let cur = this.root;
    for (const c of rel.split('/')) {
      const f = this.child(cur, c);
      if (f === null || f.kind !== 'dir') throw fsError('ENOENT', 'mkdir', '/' + rel);
      if (!f.upperDir) {
        const st = await fsp.lstat(f.host);
        await fsp.mkdir(this.upperHost(f.rel), { mode: 0o700 });
        await this.copyMeta(this.upperHost(f.rel), f.host, st);
        f.upperDir = true;
        f.branch = 0;
        f.host = this.upperHost(f.rel);
      }
      cur = f;
    }
  }

  /** A temporary name in an upper directory, hidden from the union by its `.wh.` prefix. */
  private tempIn(upperDir: string): string {
    return `${upperDir}/${WH_PREFIX}${WH_PREFIX}tmp.${process.pid}.${Math.random().toString(36).slice(2)}`;
  }

  /** Copy a lower non-directory up (content unless `data` is false, metadata always); returns its upper host path. */
  private async copyUp(f: Found, data = true): Promise<string> {
    if (f.branch === 0) return f.host;
    const parentRel = f.rel.includes('/') ? f.rel.slice(0, f.rel.lastIndexOf('/')) : '';
    await this.ensureUpperDir(parentRel);
    const dest = this.upperHost(f.rel);
    if (f.kind === 'dir') {
      await this.ensureUpperDir(f.rel);
      return dest;
    }
    const st = await fsp.lstat(f.host);
    const tmp = this.tempIn(this.upperHost(parentRel));
    try {
      if (st.isSymbolicLink()) await fsp.symlink(await fsp.readlink(f.host), tmp);
      else if (st.isFile()) {
        if (data) await fsp.copyFile(f.host, tmp, C.COPYFILE_FICLONE);
        else await (await fsp.open(tmp, 'wx', 0o600)).close();
      } else throw fsError('ENOTSUP', 'copyup', '/' + f.rel);
      await this.copyMeta(tmp, f.host, st);
      await fsp.rename(tmp, dest);
    } catch (e) {
      await fsp.rm(tmp, { force: true });
      throw e;
    }
    f.branch = 0;
    f.host = dest;
    return dest;
  }

  /**
   * Copy the visible tree `f` to the new host path `dest` as `cp -a` does (fresh inodes; owners, modes,
   * times, symlinks kept; files sharing an inode inside the tree stay hardlinked to each other), with no
   * whiteout or opaque marker inside: nothing below a directory moved to a new place may show through.
   */
  private async copyTree(f: Found, dest: string, links: Map<string, string>): Promise<void> {
    const st = await fsp.lstat(f.host);
    if (f.kind === 'dir') {
      await fsp.mkdir(dest, { mode: 0o700 });
      for (const name of this.names(f)) {
        const c = this.child(f, name);
        if (c !== null) await this.copyTree(c, `${dest}/${name}`, links);
      }
    } else if (f.kind === 'symlink') {
      await fsp.symlink(await fsp.readlink(f.host), dest);
    } else if (f.kind === 'file') {
      const key = `${st.dev}:${st.ino}`;
      const first = links.get(key);
      if (first !== undefined) return fsp.link(first, dest);
      if (st.nlink > 1) links.set(key, dest);
      await fsp.copyFile(f.host, dest, C.COPYFILE_FICLONE);
    } else throw fsError('ENOTSUP', 'copyup', '/' + f.rel);
    await this.copyMeta(dest, f.host, st);
  }

  private async whiteout(parent: Found, name: string): Promise<void> {
    await this.ensureUpperDir(parent.rel);
    await fsp.writeFile(`${this.upperHost(parent.rel)}/${WH_PREFIX}${name}`, '', { mode: 0o444 });
  }

  /** Before creating `name` in `parent`: the parent exists upstairs and any whiteout of the name is gone. */
  private async prepareCreate(parent: Found, name: string, syscall: string, path: string): Promise<string> {
    this.requireWritable(syscall, path);
    if (name.startsWith(WH_PREFIX)) throw fsError('EPERM', syscall, path);
    await this.ensureUpperDir(parent.rel);
    await unlinkIfPresent(`${this.upperHost(parent.rel)}/${WH_PREFIX}${name}`);
    return this.upperHost(this.relOf(parent, name));
  }

  /**
   * Some lower branch shows `name` in `parent` (visible or whited out). A directory created there is made
   * opaque, whatever the lower entry's type, as overlayfs does for a directory created over a whiteout.
   */
  private lowerPositive(parent: Found, name: string): boolean {
    return parent.lowerDir && this.index.dir(parent.rel).has(name);
  }

  private async makeOpaque(dirHost: string): Promise<void> {
    await fsp.writeFile(`${dirHost}/${WH_OPAQUE}`, '', { mode: 0o444 });
  }

  /** Visible names of a directory, upper first, without duplicates or whiteouts. */
  private names(dir: Found): string[] {
    const seen = new Set<string>();
    const hidden = new Set<string>();
    if (dir.upperDir) {
      for (const n of readdirSync(this.upperHost(dir.rel))) {
        if (n.startsWith(WH_PREFIX)) {
          if (!n.startsWith(WH_PREFIX + WH_PREFIX)) hidden.add(n.slice(WH_PREFIX.length));
        } else seen.add(n);
      }
    }
    if (dir.lowerDir) for (const n of this.index.dir(dir.rel).keys()) if (!hidden.has(n)) seen.add(n);
    return [...seen].sort();
  }

  /** Remove a visible name from the upper branch (a directory with everything in it) and whiteout what is below. */
  private async removeName(parent: Found, f: Found): Promise<void> {
    if (f.branch === 0) await fsp.rm(f.host, { recursive: f.kind === 'dir', force: false });
    if (f.lowerBelow) await this.whiteout(parent, f.rel.slice(f.rel.lastIndexOf('/') + 1));
  }

  private async wrap<T>(syscall: string, path: string, fn: () => Promise<T>, dest?: string): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      throw asUnionError(e, syscall, path, dest);
    }
  }

  // ---- node:fs/promises surface ----

  async open(path: string, flags?: string | number, mode?: number): Promise<UnionFileHandle> {
    return this.wrap('open', path, async () => {
      const fl = parseFlags(flags);
      const acc = fl & (C.O_RDONLY | C.O_WRONLY | C.O_RDWR);
      const creat = (fl & C.O_CREAT) !== 0;
      const excl = creat && (fl & C.O_EXCL) !== 0;
      const r = this.resolve(path, !excl && (fl & C.O_NOFOLLOW) === 0, 'open');
      const hostFlags = fl & ~(C.O_CREAT | C.O_EXCL);
      if (r.found === null) {
        if (!creat) throw fsError('ENOENT', 'open', path);
        const host = await this.prepareCreate(r.parent, r.name, 'open', path);
        return new UnionFileHandle(await fsp.open(host, fl | C.O_NOFOLLOW, mode ?? 0o666), this, path);
      }
      const f = r.found;
      if (excl) throw fsError('EEXIST', 'open', path);
      if (f.kind === 'symlink') throw fsError('ELOOP', 'open', path);
      const writes = acc !== C.O_RDONLY || (fl & C.O_TRUNC) !== 0;
      if (f.kind === 'dir' && writes) throw fsError('EISDIR', 'open', path);
      if (!writes) return new UnionFileHandle(await fsp.open(f.host, hostFlags | C.O_NOFOLLOW), this, path);
      this.requireWritable('open', path);
      const host = await this.copyUp(f, (fl & C.O_TRUNC) === 0);
      return new UnionFileHandle(await fsp.open(host, hostFlags | C.O_NOFOLLOW), this, path);
    });
  }

  async readFile(path: string, opts?: BufferEncoding | { encoding?: BufferEncoding | null; flag?: string }): Promise<string | Buffer> {
    const o = typeof opts === 'string' ? { encoding: opts } : (opts ?? {});
    const h = await this.open(path, o.flag ?? 'r');
    try {
      return await this.wrap('read', path, () => h.readFile({ encoding: o.encoding ?? null }));
    } finally {
      await h.close();
    }
  }

  async writeFile(
    path: string,
    data: string | NodeJS.ArrayBufferView | Iterable<string | NodeJS.ArrayBufferView> | AsyncIterable<string | NodeJS.ArrayBufferView>,
    opts?: BufferEncoding | { encoding?: BufferEncoding | null; mode?: number; flag?: string },
  ): Promise<void> {
    const o = typeof opts === 'string' ? { encoding: opts } : (opts ?? {});
    const h = await this.open(path, o.flag ?? 'w', o.mode);
    try {
      await this.wrap('write', path, () => h.writeFile(data as string, { encoding: o.encoding ?? 'utf8' }));
    } finally {
      await h.close();
    }
  }

  appendFile(path: string, data: string | Uint8Array, opts?: BufferEncoding | { encoding?: BufferEncoding | null; mode?: number; flag?: string }): Promise<void> {
    const o = typeof opts === 'string' ? { encoding: opts } : (opts ?? {});
    return this.writeFile(path, data, { ...o, flag: o.flag ?? 'a' });
  }

  async truncate(path: string, len = 0): Promise<void> {
    const h = await this.open(path, 'r+');
    try {
      await h.truncate(len);
    } finally {
      await h.close();
    }
  }

  stat(path: string, opts?: { bigint?: false }): Promise<Stats>;
  stat(path: string, opts: { bigint: true }): Promise<BigIntStats>;
  stat(path: string, opts?: { bigint?: boolean }): Promise<Stats | BigIntStats> {
    return this.wrap('stat', path, async () => lstatSync(this.existing(path, true, 'stat').host, opts as { bigint: false }));
  }

  lstat(path: string, opts?: { bigint?: false }): Promise<Stats>;
  lstat(path: string, opts: { bigint: true }): Promise<BigIntStats>;
  lstat(path: string, opts?: { bigint?: boolean }): Promise<Stats | BigIntStats> {
    return this.wrap('lstat', path, async () => lstatSync(this.existing(path, false, 'lstat').host, opts as { bigint: false }));
  }

  readdir(path: string, opts?: BufferEncoding | { withFileTypes?: false; encoding?: BufferEncoding }): Promise<string[]>;
  readdir(path: string, opts: { withFileTypes: true }): Promise<UnionDirent[]>;
  readdir(path: string, opts?: BufferEncoding | { withFileTypes?: boolean }): Promise<string[] | UnionDirent[]> {
    return this.wrap('scandir', path, async () => {
      const d = this.existing(path, true, 'scandir');
      if (d.kind !== 'dir') throw fsError('ENOTDIR', 'scandir', path);
      const names = this.names(d);
      if (typeof opts !== 'object' || !opts.withFileTypes) return names;
      const out: UnionDirent[] = [];
      for (const n of names) {
        const c = this.child(d, n);
        if (c !== null) out.push(new UnionDirent(n, c.kind, path));
      }
      return out;
    });
  }

  async opendir(path: string): Promise<UnionDir> {
    return new UnionDir(path, await this.readdir(path, { withFileTypes: true }));
  }

  async mkdir(path: string, opts?: number | { recursive?: boolean; mode?: number }): Promise<string | undefined> {
    const o = typeof opts === 'number' ? { mode: opts } : (opts ?? {});
    return this.wrap('mkdir', path, async () => {
      if (!o.recursive) {
        const r = this.resolve(path, false, 'mkdir');
        if (r.found !== null) throw fsError('EEXIST', 'mkdir', path);
        await this.mkdirIn(r.parent, r.name, o.mode ?? 0o777, path);
        return undefined;
      }
      const comps = path.split('/').filter((c) => c !== '' && c !== '.');
      let first: string | undefined;
      for (let i = 1; i <= comps.length; i++) {
        const sub = '/' + comps.slice(0, i).join('/');
        const r = this.resolve(sub, true, 'mkdir');
        if (r.found !== null) {
          if (r.found.kind !== 'dir') throw fsError(i === comps.length ? 'EEXIST' : 'ENOTDIR', 'mkdir', path);
          continue;
        }
        await this.mkdirIn(r.parent, r.name, o.mode ?? 0o777, path);
        first ??= sub;
      }
      return first;
    });
  }

  private async mkdirIn(parent: Found, name: string, mode: number, path: string): Promise<void> {
    const host = await this.prepareCreate(parent, name, 'mkdir', path);
    await fsp.mkdir(host, { mode });
    if (this.lowerPositive(parent, name)) await this.makeOpaque(host);
  }

  async unlink(path: string): Promise<void> {
    return this.wrap('unlink', path, async () => {
      // The kernel's order: the parent walk, a non-name, a read-only mount, then the name itself.
      const r = this.resolve(path, false, 'unlink');
      refuseNonName(r, { root: 'EISDIR', dot: 'EISDIR', dotdot: 'EISDIR' }, 'unlink', path);
      this.requireWritable('unlink', path);
      if (r.found === null) throw fsError('ENOENT', 'unlink', path);
      if (r.found.kind === 'dir') throw fsError('EISDIR', 'unlink', path);
      await this.removeName(r.parent, r.found);
    });
  }

  async rmdir(path: string): Promise<void> {
    return this.wrap('rmdir', path, async () => {
      const r = this.resolve(path, false, 'rmdir');
      refuseNonName(r, { root: 'EBUSY', dot: 'EINVAL', dotdot: 'ENOTEMPTY' }, 'rmdir', path);
      this.requireWritable('rmdir', path);
      if (r.found === null) throw fsError('ENOENT', 'rmdir', path);
      if (r.found.kind !== 'dir') throw fsError('ENOTDIR', 'rmdir', path);
      if (this.names(r.found).length > 0) throw fsError('ENOTEMPTY', 'rmdir', path);
      await this.removeName(r.parent, r.found);
    });
  }

  async rm(path: string, opts?: { recursive?: boolean; force?: boolean }): Promise<void> {
    return this.wrap('rm', path, async () => {
      const r = this.resolve(path, false, 'rm');
      if (r.found === null) {
        if (opts?.force) return;
        throw fsError('ENOENT', 'lstat', path);
      }
      if (r.found.kind !== 'dir') return this.unlink(path);
      if (!opts?.recursive) throw Object.assign(fsError('EISDIR', 'rm', path), { code: 'ERR_FS_EISDIR' });
      if (r.found.rel === '') throw fsError('EBUSY', 'rm', path);
      this.requireWritable('rm', path);
      // Nothing below a directory can stay visible once it is gone: drop the upper copy, whiteout the rest.
      await this.removeName(r.parent, r.found);
    });
  }

  async rename(oldPath: string, newPath: string): Promise<void> {
    return this.wrap(
      'rename',
      oldPath,
      async () => {
        const s = this.resolve(oldPath, false, 'rename');
        // Both parents are looked up before the source's last component, as the kernel does.
        const d = this.resolve(newPath, false, 'rename');
        const busy = { root: 'EBUSY', dot: 'EBUSY', dotdot: 'EBUSY' };
        refuseNonName(s, busy, 'rename', oldPath, newPath);
        refuseNonName(d, busy, 'rename', oldPath, newPath);
        this.requireWritable('rename', oldPath);
        const src = s.found;
        if (src === null) throw fsError('ENOENT', 'rename', oldPath, newPath);
        const dstRel = this.relOf(d.parent, d.name);
        if (dstRel === src.rel) return;
        if (dstRel.startsWith(src.rel + '/')) throw fsError('EINVAL', 'rename', oldPath, newPath);
        if (src.rel.startsWith(dstRel + '/')) throw fsError('ENOTEMPTY', 'rename', oldPath, newPath);
        // Two links to one inode (file or symlink): rename(2) does nothing and succeeds.
        if (d.found !== null && d.found.kind !== 'dir' && src.kind !== 'dir' && sameInode(src.host, d.found.host)) return;
        if (d.found !== null) {
          if (src.kind === 'dir' && d.found.kind !== 'dir') throw fsError('ENOTDIR', 'rename', oldPath, newPath);
          if (src.kind !== 'dir' && d.found.kind === 'dir') throw fsError('EISDIR', 'rename', oldPath, newPath);
          if (d.found.kind === 'dir' && this.names(d.found).length > 0) throw fsError('ENOTEMPTY', 'rename', oldPath, newPath);
        }
        if (d.name.startsWith(WH_PREFIX)) throw fsError('EPERM', 'rename', oldPath, newPath);
        if (src.kind === 'dir' && src.lowerDir) return this.moveDirByCopy(s.parent, src, d.parent, d.name, d.found);
        const wasOpaque = src.kind === 'dir' && lstatOrNull(`${src.host}/${WH_OPAQUE}`) !== null;
        await this.copyUp(src);
        if (d.found !== null && d.found.branch === 0) await fsp.rm(d.found.host, { recursive: d.found.kind === 'dir' });
        const dstHost = await this.prepareCreate(d.parent, d.name, 'rename', oldPath);
        await fsp.rename(this.upperHost(src.rel), dstHost);
        if (src.lowerBelow) await this.whiteout(s.parent, s.name);
        // As overlayfs: an upper directory moved under a merged one is made opaque, so no lower directory shows through it.
        if (src.kind === 'dir' && !wasOpaque && d.parent.lowerDir) await this.makeOpaque(dstHost);
      },
      newPath,
    );
  }

  /**
   * Rename of a directory that lower branches contribute to, done as `mv` does when rename(2) answers
   * EXDEV (overlayfs without redirect_dir): the visible tree is copied to the new name (opaque when a
   * lower branch has that name, as mkdir over a whiteout is), then the old name is removed.
   */
  private async moveDirByCopy(srcParent: Found, src: Found, dstParent: Found, dstName: string, dst: Found | null): Promise<void> {
    await this.ensureUpperDir(dstParent.rel);
    const tmp = this.tempIn(this.upperHost(dstParent.rel));
    try {
      await this.copyTree(src, tmp, new Map());
      if (this.lowerPositive(dstParent, dstName)) await this.makeOpaque(tmp);
      if (dst !== null && dst.branch === 0) await fsp.rm(dst.host, { recursive: true });
      await fsp.rename(tmp, await this.prepareCreate(dstParent, dstName, 'rename', '/' + src.rel));
    } catch (e) {
      await fsp.rm(tmp, { recursive: true, force: true });
      throw e;
    }
    await this.removeName(srcParent, src);
  }

  async symlink(target: string, path: string): Promise<void> {
    return this.wrap(
      'symlink',
      target,
      async () => {
        const r = this.resolve(path, false, 'symlink');
        if (r.found !== null) throw fsError('EEXIST', 'symlink', target, path);
        await fsp.symlink(target, await this.prepareCreate(r.parent, r.name, 'symlink', path));
      },
      path,
    );
  }

  async readlink(path: string): Promise<string> {
    return this.wrap('readlink', path, async () => {
      const f = this.existing(path, false, 'readlink');
      if (f.kind !== 'symlink') throw fsError('EINVAL', 'readlink', path);
      return fsp.readlink(f.host);
    });
  }

  async link(existingPath: string, newPath: string): Promise<void> {
    return this.wrap(
      'link',
      existingPath,
      async () => {
        const src = this.existing(existingPath, false, 'link');
        const d = this.resolve(newPath, false, 'link');
        if (d.found !== null) throw fsError('EEXIST', 'link', existingPath, newPath);
        if (src.kind === 'dir') throw fsError('EPERM', 'link', existingPath, newPath);
        this.requireWritable('link', existingPath);
        const from = await this.copyUp(src);
        await fsp.link(from, await this.prepareCreate(d.parent, d.name, 'link', existingPath));
      },
      newPath,
    );
  }

  /** Copy up the entry `path` names (following symlinks unless `follow` is false) and run `fn` on its upper copy. */
  private async modify(syscall: string, path: string, follow: boolean, fn: (host: string) => Promise<void>): Promise<void> {
    return this.wrap(syscall, path, async () => {
      const f = this.existing(path, follow, syscall);
      this.requireWritable(syscall, path);
      await fn(await this.copyUp(f));
    });
  }

  chmod(path: string, mode: number): Promise<void> {
    return this.modify('chmod', path, true, (h) => fsp.chmod(h, mode));
  }

  chown(path: string, uid: number, gid: number): Promise<void> {
    return this.modify('chown', path, true, (h) => fsp.chown(h, uid, gid));
  }

  lchown(path: string, uid: number, gid: number): Promise<void> {
    return this.modify('lchown', path, false, (h) => fsp.lchown(h, uid, gid));
  }

  utimes(path: string, atime: Time, mtime: Time): Promise<void> {
    return this.modify('utime', path, true, (h) => fsp.utimes(h, atime, mtime));
  }

  lutimes(path: string, atime: Time, mtime: Time): Promise<void> {
    return this.modify('lutime', path, false, (h) => fsp.lutimes(h, atime, mtime));
  }

  async access(path: string, mode = C.F_OK): Promise<void> {
    return this.wrap('access', path, async () => {
      const f = this.existing(path, true, 'access');
      if ((mode & C.W_OK) !== 0) this.requireWritable('access', path);
      await fsp.access(f.host, mode);
    });
  }

  /**
   * The host path of the entry `path` names (its last component not followed): the branch file a read sees,
   * for callers that need what this surface does not offer (xattrs). Never written through by the union's
   * users: a lower branch must stay as it is.
   */
  async hostPath(path: string): Promise<string> {
    return this.wrap('lstat', path, async () => (await this.existing(path, false, 'lstat')).host);
  }

  async realpath(path: string): Promise<string> {
    return this.wrap('realpath', path, async () => '/' + this.existing(path, true, 'realpath').rel);
  }

  async copyFile(src: string, dest: string, mode = 0): Promise<void> {
    const from = await this.open(src, 'r');
    try {
      const st = await from.stat();
      if (st.isDirectory()) throw fsError('EISDIR', 'copyfile', src, dest);
      const to = await this.open(dest, (mode & C.COPYFILE_EXCL) !== 0 ? 'wx' : 'w', st.mode & 0o7777);
      try {
        const buf = Buffer.allocUnsafe(1 << 20);
        for (;;) {
          const { bytesRead } = await from.read(buf, 0, buf.length, null);
          if (bytesRead === 0) break;
          await to.write(buf, 0, bytesRead);
        }
      } finally {
        await to.close();
      }
    } finally {
      await from.close();
    }
  }

  createReadStream(path: string, opts?: { start?: number; end?: number; highWaterMark?: number }): Readable {
    const union = this;
    return Readable.from(
      (async function* () {
        const h = await union.open(path, 'r');
        try {
          const size = opts?.highWaterMark ?? 1 << 20;
          let pos = opts?.start ?? 0;
          const end = opts?.end ?? Infinity;
          while (pos <= end) {
            const buf = Buffer.allocUnsafe(Math.min(size, end - pos + 1));
            const { bytesRead } = await h.read(buf, 0, buf.length, pos);
            if (bytesRead === 0) break;
            pos += bytesRead;
            yield buf.subarray(0, bytesRead);
          }
        } finally {
          await h.close();
        }
      })(),
      { objectMode: false },
    );
  }

  createWriteStream(path: string, opts?: { flags?: string; mode?: number }): Writable {
    let h: Promise<UnionFileHandle> | undefined;
    const handle = () => (h ??= this.open(path, opts?.flags ?? 'w', opts?.mode));
    return new Writable({
      write(chunk: Buffer, _enc, cb) {
        handle()
          .then((fh) => fh.write(chunk))
          .then(() => cb(), cb);
      },
      final(cb) {
        handle()
          .then((fh) => fh.close())
          .then(() => cb(), cb);
      },
    });
  }
}

/** node:fs's Dir over a union directory listing. */
export class UnionDir implements AsyncIterable<UnionDirent> {
  private i = 0;
  constructor(
    readonly path: string,
    private readonly entries: UnionDirent[],
  ) {}
  async read(): Promise<UnionDirent | null> {
    return this.entries[this.i++] ?? null;
  }
  async close(): Promise<void> {
    this.i = this.entries.length;
  }
  async *[Symbol.asyncIterator](): AsyncIterator<UnionDirent> {
    for (let e = await this.read(); e !== null; e = await this.read()) yield e;
  }
}
