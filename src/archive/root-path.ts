import { lstatSync, mkdirSync, readlinkSync } from 'node:fs';
import { posix } from 'node:path';
import { corrupt, invalidArgument, StrataError } from '../errors.js';

/** Linux' MAXSYMLINKS: more links than this in one resolution is a loop. */
const MAX_SYMLINKS = 40;

/**
 * Clean a tar entry name into a path relative to the root: normalised like path.posix.normalize, leading
 * `/` and `./` removed, no trailing `/`; '' is the root itself. A name that climbs out with `..` is rejected
 * (a leading `/..` clamps at the root, as for an absolute path).
 */
export function cleanEntryName(name: string): string {
  if (name.includes('\0')) throw corrupt(`archive entry name contains a NUL byte: ${JSON.stringify(name)}`);
  let n = posix.normalize(name);
  if (n.startsWith('/')) n = n.replace(/^\/+/, '');
  if (n.endsWith('/')) n = n.slice(0, -1);
  if (n === '.' || n === '') return '';
  if (n === '..' || n.startsWith('../')) throw corrupt(`archive entry ${JSON.stringify(name)} is outside the root (breakout attempt)`);
  return n;
}

/** The parent part of a cleaned relative name ('' for a top-level name). */
export function relDirname(rel: string): string {
  const i = rel.lastIndexOf('/');
  return i < 0 ? '' : rel.slice(0, i);
}

export function relBasename(rel: string): string {
  return rel.slice(rel.lastIndexOf('/') + 1);
}

/**
 * Which directories of one root were checked to be real directories (never symlinks), for one writer that
 * owns the root while it works (a layer or a copy being applied): every component is checked once, then
 * remembered until the writer replaces or removes it. A symlink anywhere in a parent chain is a breakout
 * attempt, as in Docker's UnpackLayer: an entry must never be written through a link. Shared by the appliers
 * on a host directory (SafeParents) and on a union (apply-to-fs.ts), which only differ in how they look.
 */
export class CheckedDirs {
  private readonly known = new Set<string>();

  /** The ancestors of `relDir` (itself included) not checked yet, shallowest first (a loop, not recursion: a stranger picks the depth). */
  unchecked(relDir: string): string[] {
    const todo: string[] = [];
    for (let p = relDir; p !== '' && !this.known.has(p); p = relDirname(p)) todo.push(p);
    return todo.reverse();
  }

  /**
   * Record what lookup found at `rel`: a directory is remembered; anything else is refused, and a missing
   * one is to be created (the caller makes it 0755) unless `create` is false.
   */
  found(rel: string, kind: 'dir' | 'symlink' | 'other' | 'missing', create: boolean): void {
    if (kind === 'symlink') throw corrupt(`archive entry goes through the symlink ${rel} (breakout attempt)`);
    if (kind === 'other') throw corrupt(`archive entry goes through ${rel}, which is not a directory`);
    if (kind === 'missing' && !create) throw corrupt(`archive entry refers to ${rel}, which does not exist`);
    this.known.add(rel);
  }

  /** `rel` was removed or replaced: it and everything below it must be checked again. */
  forget(rel: string): void {
    if (rel === '') {
      this.known.clear();
      return;
    }
    const under = rel + '/';
    for (const k of this.known) if (k === rel || k.startsWith(under)) this.known.delete(k);
  }
}

/** CheckedDirs of a host directory. */
export class SafeParents {
  private readonly checked = new CheckedDirs();
  constructor(readonly root: string) {}

  /** Host path of the directory `relDir` (cleaned), creating missing components 0755. */
  ensure(relDir: string): string {
    return this.walk(relDir, true);
  }

  /** Host path of the existing directory `relDir`, creating nothing. */
  check(relDir: string): string {
    return this.walk(relDir, false);
  }

  forget(rel: string): void {
    this.checked.forget(rel);
  }

  /** The shallowest ancestor of `relDir` (itself included) not checked yet, or null. */
  firstUnchecked(relDir: string): string | null {
    return this.checked.unchecked(relDir)[0] ?? null;
  }

  /** The writer makes `rel` a directory (or keeps the one there), before anything is written below it. */
  made(rel: string): void {
    this.checked.found(rel, 'dir', true);
  }

  private walk(relDir: string, create: boolean): string {
    if (relDir === '') return this.root;
    for (const rel of this.checked.unchecked(relDir)) {
      const host = this.root + '/' + rel;
      const st = lstatSync(host, { throwIfNoEntry: false });
      this.checked.found(rel, st === undefined ? 'missing' : st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'dir' : 'other', create);
      if (st === undefined) mkdirSync(host, 0o755);
    }
    return this.root + '/' + relDir;
  }
}

/**
 * Resolve `p` (a path inside the root, absolute or relative) to a host path under `root`, following symlinks
 * as if `root` were `/` (chroot semantics: absolute targets start at the root, `..` stops at it). Components
 * that do not exist are appended as they are, so the result may name something to be created. The walk is
 * lstat by lstat, so it is only race-free against writers that cannot run concurrently (no container running).
 */
export function resolveInRoot(root: string, p: string): string {
  const todo = p.split('/').reverse();
  const done: string[] = [];
  let links = 0;
  while (todo.length > 0) {
    const c = todo.pop()!;
    if (c === '' || c === '.') continue;
    if (c === '..') {
      done.pop();
      continue;
    }
    const host = root + '/' + [...done, c].join('/');
    let target: string | null = null;
    try {
      if (lstatSync(host).isSymbolicLink()) target = readlinkSync(host);
    } catch (e) {
      if (!isMissing(e)) throw e;
    }
    if (target === null) {
      done.push(c);
      continue;
    }
    if (++links > MAX_SYMLINKS) {
      throw new StrataError('ErrInvalidArgument', `too many levels of symbolic links resolving ${p} (ELOOP)`);
    }
    if (target.startsWith('/')) done.length = 0;
    todo.push(...target.split('/').reverse());
  }
  if (done.length === 0) return root;
  const out = root + '/' + done.join('/');
  if (out.includes('\0')) throw invalidArgument(`path contains a NUL byte: ${JSON.stringify(p)}`);
  return out;
}

function isMissing(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}
