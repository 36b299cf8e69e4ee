import type { Stats } from 'node:fs';
import { corrupt, internal, isErrno, StrataError } from '../errors.js';
import { native } from '../native/native.js';
import type { TarHeader } from './tar/tar-header.js';
import { cleanEntryName, relBasename } from './root-path.js';
import { OVERLAY_XATTR_PREFIX } from './whiteout.js';

/*
 * The decisions every applier of a tar onto a tree shares: applyLayer on a host directory and applyToFs
 * on a union (a `cp` into a container with no mount). They differ only in how they touch the tree.
 */

/** Linux' PATH_MAX: a longer host path is refused before a deep chain of parents is made for nothing. */
const PATH_MAX = 4096;

/** Refuses what no applier writes (`rel` is the entry's cleaned name); returns its last component. */
export function entryBase(h: TarHeader, rel: string, rootBytes: number): string {
  // Fail before creating a deep chain of parents the kernel would refuse at its end anyway.
  if (rootBytes + Buffer.byteLength(rel) >= PATH_MAX) throw corrupt(`name is too long for a path here (${rel.length} characters)`);
  if (rel === '' && h.type !== 'directory') throw corrupt(`a ${h.type} cannot replace the layer root`);
  return relBasename(rel);
}

/** A directory entry over an existing directory keeps its content and takes the entry's metadata; anything else in the way is replaced. */
export function keepsExisting(h: TarHeader, existing: Pick<Stats, 'isDirectory'>): boolean {
  return h.type === 'directory' && existing.isDirectory();
}

/** The cleaned name a hardlink entry links to (never the root). */
export function hardlinkTarget(h: TarHeader): string {
  const t = cleanEntryName(h.linkname);
  if (t === '') throw corrupt(`hardlink to the layer root`);
  return t;
}

/** What a hardlink links to must exist and not be a directory. */
export function checkHardlinkTarget(h: TarHeader, target: Pick<Stats, 'isDirectory'> | undefined): void {
  if (target === undefined) throw corrupt(`hardlink target ${h.linkname} does not exist`);
  if (target.isDirectory()) throw corrupt(`hardlink target ${h.linkname} is a directory`);
}

/** Device nodes need privileges a rootless caller lacks: skipped, as Docker's archive does in a user namespace (fifos are made). */
export function skipsNode(h: TarHeader, rootless: boolean): boolean {
  return rootless && (h.type === 'char' || h.type === 'block');
}

export type MetaStep = { op: 'chown'; uid: number; gid: number } | { op: 'xattr'; name: string; value: Buffer } | { op: 'chmod'; mode: number };

/**
 * An entry's metadata, in the order it must be set: chown clears setuid and security.capability, so owner
 * first, then xattrs, then the mode (`chmod` false for nodes a path chmod could not reach safely: symlinks).
 * Rootless keeps the caller's ownership; overlay's private xattrs are never taken from an archive.
 */
export function metaSteps(h: TarHeader, rootless: boolean, chmod: boolean): MetaStep[] {
  const steps: MetaStep[] = rootless ? [] : [{ op: 'chown', uid: h.uid, gid: h.gid }];
  for (const [name, value] of h.xattrs) if (!name.startsWith(OVERLAY_XATTR_PREFIX)) steps.push({ op: 'xattr', name, value });
  if (chmod) steps.push({ op: 'chmod', mode: h.mode });
  return steps;
}

/** An xattr the filesystem does not support, or (rootless) a privileged one, is left out rather than failing the apply. */
export function xattrFailureTolerated(e: unknown, rootless: boolean): boolean {
  return isErrno(e, 'ENOTSUP') || (rootless && isErrno(e, 'EPERM'));
}

/** Directory times are set last, deepest first, once nothing is written into them any more. */
export class DirTimes {
  private readonly times = new Map<string, TarHeader>();

  set(rel: string, h: TarHeader): void {
    this.times.set(rel, h);
  }

  /** `rel` was removed: neither it nor anything below it gets times. */
  forget(rel: string): void {
    const under = rel + '/';
    for (const k of this.times.keys()) if (k === rel || k.startsWith(under)) this.times.delete(k);
  }

  deepestFirst(): Array<[string, TarHeader]> {
    return [...this.times].sort((a, b) => depth(b[0]) - depth(a[0]));
  }
}

function depth(rel: string): number {
  let n = rel === '' ? 0 : 1;
  for (let i = rel.indexOf('/'); i >= 0; i = rel.indexOf('/', i + 1)) n++;
  return n;
}

/** Errors from the filesystem mean the archive asks for something impossible here. */
const archiveErrnos = new Set(['ENOTDIR', 'EISDIR', 'EEXIST', 'ENOENT', 'ELOOP', 'EINVAL', 'ENAMETOOLONG', 'EMLINK', 'EPERM', 'EXDEV']);

/** An applier's failure, naming the entry it was applying. */
export function explainEntryError(e: unknown, name: string): unknown {
  const where = `layer entry ${JSON.stringify(name)}`;
  if (e instanceof StrataError) return new StrataError(e.code, `${where}: ${e.message}`, { cause: e });
  if (isErrno(e)) {
    const msg = `${where}: ${e.message}`;
    return archiveErrnos.has(e.code!) ? corrupt(msg, e) : internal(msg, e);
  }
  return e;
}

/** The entry's times with nanoseconds, on the node itself (never following a symlink). */
export function setEntryTimes(hostPath: string, h: TarHeader): void {
  const a = h.atime ?? h.mtime;
  native.lutimes(hostPath, a.sec, a.nsec, h.mtime.sec, h.mtime.nsec);
}
