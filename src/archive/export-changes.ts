import { closeSync, constants as C, lstatSync, openSync, readdirSync, readlinkSync, readSync, type BigIntStats } from 'node:fs';
import type { Readable } from 'node:stream';
import type { Change } from '../driver/driver.js';
import { conflict, isErrno } from '../errors.js';
import { native } from '../native/native.js';
import { devMajor, devMinor } from './device-number.js';
import { relBasename, relDirname, SafeParents } from './root-path.js';
import type { EntryType, TarHeader } from './tar/tar-header.js';
import { writeTar, type TarWriteEntry } from './tar/tar-writer.js';
import { OVERLAY_OPAQUE_XATTR, OVERLAY_XATTR_PREFIX, WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX } from './whiteout.js';

/*
 * Layer tars from trees on disk, deterministic: entries sorted by name, mtimes as on disk with nanoseconds,
 * numeric owners with empty uname/gname, no atime/ctime, xattrs in name order, a non-directory inode seen
 * twice becomes a hardlink to its first name. File bodies stream from disk in 1 MiB chunks.
 */

/**
 * The OCI layer tar for a set of changes: changed/added entries from root (full metadata), deletions as
 * `.wh.<name>`. Hardlinks inside the set become hardlink entries. Same tree and changes, same bytes.
 */
export function exportChanges(root: string, changes: Change[]): Readable {
  const sorted = [...changes].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  function* entries(): Generator<TarWriteEntry> {
    const links = new Map<string, string>();
    const parents = new SafeParents(root);
    for (const change of sorted) {
      const rel = change.path.replace(/^\/+/, '');
      if (rel === '') continue;
      const dir = relDirname(rel);
      if (change.kind === 'D') {
        yield { header: header(prefixed(dir, WHITEOUT_PREFIX + relBasename(rel)), 'file', 0o600, 0, 0, 0n) };
        continue;
      }
      // Read nothing through a symlink: a parent swapped for a link after the diff must not export host files.
      const host = parents.check(dir) + '/' + relBasename(rel);
      const st = lstatSync(host, { bigint: true, throwIfNoEntry: false });
      if (st === undefined) throw conflict(`${change.path} disappeared while its layer was being exported`);
      const e = entryFor(rel, host, st, links);
      if (e) yield e;
    }
  }
  return writeTar(entries());
}

/** A whole tree as a tar (for `export`, and to build a base layer); the root itself has no entry. */
export function exportTree(root: string): Readable {
  return writeTar(treeEntries(root, 'tree'));
}

/**
 * Native overlay diff: tar the upper dir directly, char 0:0 devices becoming `.wh.<name>` and an opaque
 * directory getting a `.wh..wh..opq` entry right after its own (the xattr itself is not exported).
 */
export function exportOverlayUpper(upperDir: string): Readable {
  return writeTar(treeEntries(upperDir, 'overlay'));
}

/**
 * Native AUFS diff: the layer directory already holds the tar's `.wh.` whiteouts and opaque markers,
 * so it is tarred as it is, without AUFS's own `.wh..wh.*` metadata (as Docker's aufs Diff).
 */
export function exportAufsLayer(layerDir: string): Readable {
  return writeTar(treeEntries(layerDir, 'aufs'));
}

/** Every entry below root, sorted; `overlay` turns the overlay whiteout forms into tar whiteouts, `aufs` drops union metadata. */
function* treeEntries(root: string, form: 'tree' | 'overlay' | 'aufs'): Generator<TarWriteEntry> {
  const overlay = form === 'overlay';
  const links = new Map<string, string>();
  function* walk(rel: string, dir: string): Generator<TarWriteEntry> {
    for (const name of readdirSync(dir).sort()) {
      if (form === 'aufs' && name.startsWith(WHITEOUT_META_PREFIX) && name !== WHITEOUT_OPAQUE) continue;
      const r = prefixed(rel, name);
      const host = `${dir}/${name}`;
      const st = lstatSync(host, { bigint: true });
      if (overlay && st.isCharacterDevice() && st.rdev === 0n) {
        yield { header: header(prefixed(rel, WHITEOUT_PREFIX + name), 'file', 0o600, Number(st.uid), Number(st.gid), st.mtimeNs) };
        continue;
      }
      const e = entryFor(r, host, st, links);
      if (e) yield e;
      if (!st.isDirectory()) continue;
      if (overlay && native.lgetxattr(host, OVERLAY_OPAQUE_XATTR)?.toString() === 'y') {
        const mode = Number(st.mode & 0o777n);
        yield { header: header(prefixed(r, WHITEOUT_OPAQUE), 'file', mode, Number(st.uid), Number(st.gid), st.mtimeNs) };
      }
      yield* walk(r, host);
    }
  }
  yield* walk('', root);
}

const prefixed = (dir: string, name: string) => (dir === '' ? name : `${dir}/${name}`);

const NS = 1_000_000_000n;

function header(name: string, type: EntryType, mode: number, uid: number, gid: number, mtimeNs: bigint): TarHeader {
  let sec = mtimeNs / NS;
  let nsec = mtimeNs % NS;
  if (nsec < 0n) {
    sec -= 1n;
    nsec += NS;
  }
  return {
    name,
    type,
    mode,
    uid,
    gid,
    uname: '',
    gname: '',
    size: 0,
    mtime: { sec: Number(sec), nsec: Number(nsec) },
    linkname: '',
    devmajor: 0,
    devminor: 0,
    xattrs: new Map(),
    pax: new Map(),
  };
}

function typeOf(st: BigIntStats): EntryType | null {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'directory';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  return null; // sockets cannot travel in a tar
}

/** The entry for one path; `links` maps inodes already written to their names. */
function entryFor(rel: string, host: string, st: BigIntStats, links: Map<string, string>): TarWriteEntry | null {
  const type = typeOf(st);
  if (type === null) return null;
  const h = header(type === 'directory' ? rel + '/' : rel, type, Number(st.mode & 0o7777n), Number(st.uid), Number(st.gid), st.mtimeNs);
  for (const name of native.llistxattr(host).sort()) {
    if (name.startsWith(OVERLAY_XATTR_PREFIX)) continue;
    const value = native.lgetxattr(host, name);
    if (value !== null) h.xattrs.set(name, value);
  }
  if (type !== 'directory' && st.nlink > 1n) {
    const key = `${st.dev}:${st.ino}`;
    const first = links.get(key);
    if (first !== undefined) {
      h.type = 'hardlink';
      h.linkname = first;
      return { header: h };
    }
    links.set(key, rel);
  }
  switch (type) {
    case 'symlink':
      h.linkname = readlinkSync(host);
      break;
    case 'char':
    case 'block':
      h.devmajor = devMajor(st.rdev);
      h.devminor = devMinor(st.rdev);
      break;
    case 'file':
      h.size = Number(st.size);
      if (h.size > 0) return { header: h, body: fileBody(host, h.size) };
  }
  return { header: h };
}

const CHUNK = 1 << 20;

/** Exactly `size` bytes of a regular file, opened without following a link when the writer gets to it (synchronously: no event-loop hop per small file). */
function* fileBody(path: string, size: number): Generator<Buffer> {
  let fd: number;
  try {
    fd = openSync(path, C.O_RDONLY | C.O_NOFOLLOW);
  } catch (e) {
    if (isErrno(e, 'ENOENT') || isErrno(e, 'ELOOP')) throw conflict(`${path} changed while its layer was being exported`, e);
    throw e;
  }
  try {
    for (let left = size; left > 0; ) {
      const buf = Buffer.allocUnsafe(Math.min(CHUNK, left));
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) throw conflict(`${path} shrank while its layer was being exported`);
      left -= n;
      yield n === buf.length ? buf : buf.subarray(0, n);
    }
  } finally {
    closeSync(fd);
  }
}
