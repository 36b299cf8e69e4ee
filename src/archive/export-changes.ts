import { constants as C, lstatSync, readlinkSync, type BigIntStats } from 'node:fs';
import type { Readable } from 'node:stream';
import type { Change } from '../driver/driver.js';
import { conflict } from '../errors.js';
import { native, SCAN_FIELDS, type DirScan } from '../native/native.js';
import { devMajor, devMinor } from './device-number.js';
import { relBasename, relDirname, SafeParents } from './root-path.js';
import type { EntryType, TarHeader } from './tar/tar-header.js';
import { writeTar, type TarWriteEntry } from './tar/tar-writer.js';
import { hostTar, shrank, type HostEntry } from './host-tar.js';
import { OVERLAY_OPAQUE_XATTR, OVERLAY_XATTR_PREFIX, WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX } from './whiteout.js';

/*
 * Layer tars from trees on disk, deterministic: entries sorted by name, mtimes as on disk truncated to the second
 * (as Docker's archive writes them: an entry then needs no PAX header for its time, ~1 KiB less per file),
 * numeric owners with empty uname/gname, no atime/ctime, xattrs in name order, a non-directory inode seen
 * twice becomes a hardlink to its first name. The bytes are written by hostTar (host-tar.ts).
 */

/**
 * The OCI layer tar for a set of changes: changed/added entries from root (full metadata), deletions as
 * `.wh.<name>`. Hardlinks inside the set become hardlink entries. Same tree and changes, same bytes.
 */
export function exportChanges(root: string, changes: Change[]): Readable {
  const sorted = [...changes].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  function* entries(): Generator<HostEntry> {
    const links = new Map<string, string>();
    const parents = new SafeParents(root);
    for (const change of sorted) {
      const rel = change.path.replace(/^\/+/, '');
      if (rel === '') continue;
      const dir = relDirname(rel);
      if (change.kind === 'D') {
        yield { header: header(prefixed(dir, WHITEOUT_PREFIX + relBasename(rel)), 'file', 0o600, 0, 0, 0) };
        continue;
      }
      // Read nothing through a symlink: a parent swapped for a link after the diff must not export host files.
      const host = parents.check(dir) + '/' + relBasename(rel);
      const big = lstatSync(host, { bigint: true, throwIfNoEntry: false });
      if (big === undefined) throw conflict(`${change.path} disappeared while its layer was being exported`);
      const st = fromStats(big);
      const e = entryFor(rel, host, st, links, hostXattrs(host), st.type === 'symlink' ? readlinkSync(host) : null);
      if (e) yield e;
    }
  }
  return hostTar(entries());
}

/** A whole tree as a tar (for `export`, and to build a base layer); the root itself has no entry. */
export function exportTree(root: string): Readable {
  return hostTar(treeEntries(root, 'tree'));
}

/**
 * Native overlay diff: tar the upper dir directly, char 0:0 devices becoming `.wh.<name>` and an opaque
 * directory getting a `.wh..wh..opq` entry right after its own (the xattr itself is not exported).
 */
export function exportOverlayUpper(upperDir: string): Readable {
  return hostTar(treeEntries(upperDir, 'overlay'));
}

/**
 * Native AUFS diff: the layer directory already holds the tar's `.wh.` whiteouts and opaque markers,
 * so it is tarred as it is, without AUFS's own `.wh..wh.*` metadata (as Docker's aufs Diff).
 */
export function exportAufsLayer(layerDir: string): Readable {
  return hostTar(treeEntries(layerDir, 'aufs'));
}

/** Subdirectories scanned ahead of the walk, per directory being walked: each scan is a thread-pool round trip. */
const SCAN_AHEAD = 4;

/**
 * Every entry below root, sorted; `overlay` turns the overlay whiteout forms into tar whiteouts, `aufs` drops
 * union metadata. Each directory is read by one native.scanDir on a worker thread, a few subdirectories ahead.
 */
async function* treeEntries(root: string, form: 'tree' | 'overlay' | 'aufs'): AsyncGenerator<HostEntry> {
  const t = new TreeWalk(form);
  const stack = [await t.open('', root)];
  const out: HostEntry[] = [];
  while (stack.length > 0) {
    const below = t.advance(stack.at(-1)!, out);
    yield* out;
    out.length = 0;
    if (below === null) stack.pop();
    else stack.push(await t.open(below.rel, below.dir));
  }
}

/** A directory being walked: its scan, its entries' order and where the walk is in it. */
interface Frame {
  rel: string;
  dir: string;
  sc: DirScan;
  order: number[];
  /** Host paths of its subdirectories, in order: the next SCAN_AHEAD of them are being scanned. */
  subdirs: string[];
  pos: number;
  below: number;
}

/**
 * One tree walk: a loop over a stack of directories, not a recursive generator, and made of small functions.
 * V8 compiled the recursive generator (everything inlined into it) in 50-130 ms, several times per process
 * as its type feedback grew, and again in every commit when it was a closure made per export.
 */
class TreeWalk {
  private readonly links = new Map<string, string>();
  private readonly started = new Map<string, Promise<DirScan>>();
  private readonly overlay: boolean;
  constructor(private readonly form: 'tree' | 'overlay' | 'aufs') {
    this.overlay = form === 'overlay';
  }

  /** Starts reading dir (once). */
  private scan(dir: string): Promise<DirScan> {
    let p = this.started.get(dir);
    if (p === undefined) {
      p = native.scanDir(dir);
      p.catch(() => undefined); // awaited when the walk gets there; not at all if it stops first
      this.started.set(dir, p);
    }
    return p;
  }

  async open(rel: string, dir: string): Promise<Frame> {
    const sc = await this.scan(dir);
    this.started.delete(dir);
    const names = sc.names;
    const order = names.map((_, i) => i).sort((a, b) => (names[a]! < names[b]! ? -1 : names[a]! > names[b]! ? 1 : 0));
    const subdirs = order.filter((i) => scanType(sc, i) === 'directory').map((i) => `${dir}/${names[i]}`);
    for (let k = 0; k < SCAN_AHEAD && k < subdirs.length; k++) this.scan(subdirs[k]!);
    return { rel, dir, sc, order, subdirs, pos: 0, below: 0 };
  }

  /** Adds f's next entries to out, up to and including its next directory, which is returned to be walked next; null at f's end. */
  advance(f: Frame, out: HostEntry[]): { rel: string; dir: string } | null {
    while (f.pos < f.order.length) {
      const i = f.order[f.pos++]!;
      const name = f.sc.names[i]!;
      if (this.form === 'aufs' && name.startsWith(WHITEOUT_META_PREFIX) && name !== WHITEOUT_OPAQUE) continue;
      const rel = prefixed(f.rel, name);
      const host = `${f.dir}/${name}`;
      const st = fromScan(f.sc, i);
      if (this.overlay && st.type === 'char' && st.rdev === 0) {
        out.push({ header: header(prefixed(f.rel, WHITEOUT_PREFIX + name), 'file', 0o600, st.uid, st.gid, st.mtimeSec) });
        continue;
      }
      const xattrs = f.sc.xattrs[i] ?? [];
      const e = entryFor(rel, host, st, this.links, withoutOverlay(xattrs), f.sc.links[i]!);
      if (e) out.push(e);
      if (st.type !== 'directory') continue;
      if (this.overlay && xattrs.some(([n, v]) => n === OVERLAY_OPAQUE_XATTR && v.toString() === 'y')) {
        out.push({ header: header(prefixed(rel, WHITEOUT_OPAQUE), 'file', st.mode & 0o777, st.uid, st.gid, st.mtimeSec) });
      }
      const next = ++f.below + SCAN_AHEAD - 1;
      if (next < f.subdirs.length) this.scan(f.subdirs[next]!);
      return { rel, dir: host };
    }
    return null;
  }
}

const prefixed = (dir: string, name: string) => (dir === '' ? name : `${dir}/${name}`);

/** What an entry's header is made from: lstat's answer, from node:fs or a native scan. */
interface EntryStat {
  type: EntryType | null;
  /** Permission bits (0o7777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  rdev: number;
  /** Whole seconds, rounded down (a header carries no fraction). */
  mtimeSec: number;
  /** dev:ino, which identifies a hardlinked inode (asked only when nlink > 1: most entries never need it). */
  inode: () => string;
}

const NS = 1_000_000_000n;

function fromStats(st: BigIntStats): EntryStat {
  let sec = st.mtimeNs / NS;
  if (st.mtimeNs % NS < 0n) sec -= 1n;
  return {
    type: typeOf(Number(st.mode)),
    mode: Number(st.mode & 0o7777n),
    uid: Number(st.uid),
    gid: Number(st.gid),
    size: Number(st.size),
    nlink: Number(st.nlink),
    rdev: Number(st.rdev),
    mtimeSec: Number(sec),
    inode: () => `${st.dev}:${st.ino}`,
  };
}

const scanType = (sc: DirScan, i: number) => typeOf(sc.stats[i * SCAN_FIELDS]!);

function fromScan(sc: DirScan, i: number): EntryStat {
  const f = sc.stats.subarray(i * SCAN_FIELDS, (i + 1) * SCAN_FIELDS);
  return {
    type: typeOf(f[0]!),
    mode: f[0]! & 0o7777,
    uid: f[1]!,
    gid: f[2]!,
    size: f[3]!,
    nlink: f[4]!,
    rdev: f[5]!,
    mtimeSec: f[6]!, // with nanoseconds in [0, 1e9): already rounded down
    inode: () => `${sc.ids[2 * i]}:${sc.ids[2 * i + 1]}`,
  };
}

function header(name: string, type: EntryType, mode: number, uid: number, gid: number, mtimeSec: number): TarHeader {
  return {
    name,
    type,
    mode,
    uid,
    gid,
    uname: '',
    gname: '',
    size: 0,
    mtime: { sec: mtimeSec, nsec: 0 },
    linkname: '',
    devmajor: 0,
    devminor: 0,
    xattrs: new Map(),
    pax: new Map(),
  };
}

const TYPES: ReadonlyMap<number, EntryType> = new Map([
  [C.S_IFREG, 'file'],
  [C.S_IFDIR, 'directory'],
  [C.S_IFLNK, 'symlink'],
  [C.S_IFCHR, 'char'],
  [C.S_IFBLK, 'block'],
  [C.S_IFIFO, 'fifo'],
]);

/** The entry type of a stat mode; null for sockets, which cannot travel in a tar. */
function typeOf(mode: number): EntryType | null {
  return TYPES.get(mode & C.S_IFMT) ?? null;
}

/**
 * The header of one entry from its stat, or null for what a tar cannot hold; `links` maps inodes already
 * written to their names, making a second name a hardlink entry. The caller adds what needs reading:
 * xattrs, a symlink's target, a file's body.
 */
function headerFor(rel: string, st: EntryStat, links: Map<string, string>): TarHeader | null {
  const type = st.type;
  if (type === null) return null;
  const h = header(type === 'directory' ? rel + '/' : rel, type, st.mode, st.uid, st.gid, st.mtimeSec);
  if (type !== 'directory' && st.nlink > 1) {
    const key = st.inode();
    const first = links.get(key);
    if (first !== undefined) {
      h.type = 'hardlink';
      h.linkname = first;
      return h;
    }
    links.set(key, rel);
  }
  if (type === 'char' || type === 'block') {
    h.devmajor = devMajor(st.rdev);
    h.devminor = devMinor(st.rdev);
  }
  if (type === 'file') h.size = st.size;
  return h;
}

/** A host path's xattrs, overlayfs' own left out (they describe the upper dir, not the file). */
export function hostXattrs(host: string): Array<[string, Buffer]> {
  const out: Array<[string, Buffer]> = [];
  for (const name of native.llistxattr(host)) {
    if (name.startsWith(OVERLAY_XATTR_PREFIX)) continue;
    const v = native.lgetxattr(host, name);
    if (v !== null) out.push([name, v]);
  }
  return out;
}

const withoutOverlay = (xattrs: Array<[string, Buffer]>) => xattrs.filter(([name]) => !name.startsWith(OVERLAY_XATTR_PREFIX));

/** Xattrs go into the header in name order, whatever order they were listed in. */
function addXattrs(h: TarHeader, xattrs: Array<[string, Buffer]>): void {
  for (const [name, value] of xattrs.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) h.xattrs.set(name, value);
}

/** The entry for one host path, given its xattrs (overlay's left out) and, for a symlink, its target. */
function entryFor(rel: string, host: string, st: EntryStat, links: Map<string, string>, xattrs: Array<[string, Buffer]>, target: string | null): HostEntry | null {
  const h = headerFor(rel, st, links);
  if (h === null) return null;
  addXattrs(h, xattrs);
  if (h.type === 'symlink') h.linkname = target!;
  if (h.type !== 'file' || h.size === 0) return { header: h };
  return { header: h, host };
}

/** The calls of node:fs/promises a tree walk needs, on absolute paths (a UnionFs has them). */
export interface TreeFs {
  readdir(path: string): Promise<string[]>;
  lstat(path: string, opts: { bigint: true }): Promise<BigIntStats>;
  readlink(path: string): Promise<string>;
  open(path: string, flags: 'r'): Promise<{ read(buf: Buffer, offset: number, length: number, position: number | null): Promise<{ bytesRead: number }>; close(): Promise<void> }>;
}

/** An entry's xattrs for a TreeFs, whose surface has no xattr calls. */
export type XattrReader = (path: string) => Promise<Array<[string, Buffer]>>;

/** One subtree of a TreeFs to export: the entry at `path` named `as`, what is below it named below that. */
export interface FsSubtree {
  path: string;
  as: string;
  /** Names (`/<as>/...`) left out, with what is below them. */
  skip?: ReadonlySet<string>;
}

/**
 * exportTree over a TreeFs instead of a host directory (a union read with no mount): the same entries,
 * order and headers; xattrs only when `xattrs` reads them. With `sub`, one subtree and its top entry.
 */
export function exportFsTree(fs: TreeFs, xattrs?: XattrReader, sub?: FsSubtree): Readable {
  const links = new Map<string, string>();
  const skip = sub?.skip ?? new Set<string>();
  async function* entry(name: string, p: string): AsyncGenerator<TarWriteEntry> {
    const st = await fs.lstat(p, { bigint: true });
    const h = headerFor(name, fromStats(st), links);
    if (h === null) return;
    if (xattrs) addXattrs(h, await xattrs(p));
    if (h.type === 'symlink') h.linkname = await fs.readlink(p);
    yield h.type === 'file' && h.size > 0 ? { header: h, body: fsFileBody(fs, p, h.size) } : { header: h };
    if (st.isDirectory()) yield* children(name, p);
  }
  async function* children(name: string, p: string): AsyncGenerator<TarWriteEntry> {
    for (const child of (await fs.readdir(p)).sort()) {
      const n = prefixed(name, child);
      if (!skip.has('/' + n)) yield* entry(n, p === '/' ? '/' + child : `${p}/${child}`);
    }
  }
  return writeTar(sub ? entry(sub.as, sub.path) : children('', '/'));
}

const CHUNK = 1 << 20;

/** Exactly `size` bytes of a file of a TreeFs, in chunks no bigger than needed. */
async function* fsFileBody(fs: TreeFs, path: string, size: number): AsyncGenerator<Buffer> {
  const h = await fs.open(path, 'r');
  try {
    for (let left = size; left > 0; ) {
      const buf = Buffer.allocUnsafe(Math.min(CHUNK, left));
      const { bytesRead } = await h.read(buf, 0, buf.length, null);
      if (bytesRead === 0) throw shrank(path);
      left -= bytesRead;
      yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
    }
  } finally {
    await h.close();
  }
}
