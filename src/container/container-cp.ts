import { lstatSync, readdirSync, realpathSync, statSync, type Stats } from 'node:fs';
import { basename, dirname, posix, resolve as resolveHost } from 'node:path';
import { Readable } from 'node:stream';
import type { Stores } from '../stores.js';
import type { Change } from '../driver/driver.js';
import { StrataError, invalidArgument, isErrno, notFound } from '../errors.js';
import { exportChanges } from '../archive/export-changes.js';
import { applyLayer } from '../archive/apply-layer.js';
import { readTar } from '../archive/tar/tar-reader.js';
import { writeTar, type TarWriteEntry } from '../archive/tar/tar-writer.js';
import { openContainerView, resolveContainerPath, withContainerView, type ContainerView } from './container-path.js';

/** `cp -a` keeps owners; `-L` follows a symlink given as the source. */
export interface CopyOptions {
  archive?: boolean;
  followLink?: boolean;
}

/** What is copied: a host path (in the container's view or on the host) and the name it is copied as. */
interface Source {
  host: string;
  isDir: boolean;
  name: string;
  /** `dir/.`: the directory's content, not the directory. */
  contentsOnly: boolean;
}

interface Dest {
  host: string;
  stat: Stats | undefined;
  /** Ends with `/` (or `/.`): must be a directory. */
  assertsDir: boolean;
  shown: string;
}

const contentsOnly = (p: string) => p === '.' || p.endsWith('/.');
const assertsDir = (p: string) => p.endsWith('/') || contentsOnly(p);

/** The name a path is copied as (docker's rebase name): its last component; '/' and `dir/.` copy content. */
function lastName(p: string): string {
  const parts = p.split('/').filter((x) => x !== '' && x !== '.');
  return parts.at(-1) ?? '.';
}

function checkSourceType(st: Stats, p: string): boolean {
  if (assertsDir(p) && !st.isDirectory()) throw invalidArgument(`cannot copy ${p}: not a directory`);
  return st.isDirectory();
}

function containerSource(view: ContainerView, p: string, shown: string, opts: CopyOptions): Source {
  const r = resolveContainerPath(view, p, opts.followLink === true || assertsDir(p));
  const st = lstatSync(r.host, { throwIfNoEntry: false });
  if (!st) throw notFound(`Could not find the file ${p} in container ${shown}`);
  const name = lastName(p);
  return { host: r.host, isDir: checkSourceType(st, p), name, contentsOnly: contentsOnly(p) || name === '.' };
}

function hostSource(p: string, opts: CopyOptions): Source {
  const abs = resolveHost(p);
  const follow = opts.followLink === true || assertsDir(p);
  let st: Stats;
  try {
    st = follow ? statSync(abs) : lstatSync(abs);
  } catch (e) {
    if (isErrno(e, 'ENOENT') || isErrno(e, 'ENOTDIR')) throw notFound(`lstat ${p}: no such file or directory`);
    throw e;
  }
  const name = lastName(abs);
  return { host: follow ? realpathSync(abs) : abs, isDir: checkSourceType(st, p), name, contentsOnly: contentsOnly(p) || name === '.' };
}

/**
 * Where the copy lands (docker's CopyInfoDestinationPath/PrepareArchiveCopy): into an existing directory
 * under the source's name (or its content for `dir/.`), over an existing file (a directory cannot be), or
 * as a new entry whose parent must exist; a path ending in `/` must be an existing directory for a file.
 */
function placement(src: Source, dst: Dest): { dir: string; to: string } {
  if (dst.stat?.isDirectory()) return { dir: dst.host, to: src.contentsOnly ? '.' : src.name };
  if (dst.stat) {
    if (src.isDir) throw invalidArgument(`cannot copy a directory to a file: ${dst.shown} is not a directory`);
    if (dst.assertsDir) throw invalidArgument(`${dst.shown} is not a directory`);
    return { dir: dirname(dst.host), to: basename(dst.host) };
  }
  if (dst.assertsDir && !src.isDir) throw notFound(`destination directory ${dst.shown} does not exist`);
  if (!lstatSync(dirname(dst.host), { throwIfNoEntry: false })?.isDirectory()) {
    throw notFound(`cannot copy to ${dst.shown}: its parent directory does not exist`);
  }
  return { dir: dirname(dst.host), to: basename(dst.host) };
}

/** Every path of the tree at `host`, named below its parent (`/<base>/...`), for exportChanges. */
function treeChanges(host: string): Change[] {
  const base = basename(host);
  const out: Change[] = [{ path: `/${base}`, kind: 'A' }];
  if (!lstatSync(host).isDirectory()) return out;
  const stack: Array<[string, string]> = [[host, `/${base}`]];
  while (stack.length > 0) {
    const [dir, rel] = stack.pop()!;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      out.push({ path: `${rel}/${e.name}`, kind: 'A' });
      if (e.isDirectory()) stack.push([`${dir}/${e.name}`, `${rel}/${e.name}`]);
    }
  }
  return out;
}

/** Tar entries renamed from top name `from` to `to` ('.' = the directory extracted into), owners optionally replaced. */
async function* renamed(tar: AsyncIterable<Buffer>, from: string | null, to: string, owner: { uid: number; gid: number } | null, guard?: (name: string) => void): AsyncGenerator<TarWriteEntry> {
  const rename = (n: string) => {
    const dir = n.endsWith('/');
    const x = n.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
    const out = from === null ? x : x === from ? to : x.startsWith(from + '/') ? `${to}/${x.slice(from.length + 1)}` : x;
    return dir || out === '.' ? `${out}/` : out;
  };
  for await (const e of readTar(tar)) {
    const h = { ...e.header, name: rename(e.header.name) };
    guard?.(h.name);
    if (h.type === 'hardlink') h.linkname = rename(h.linkname);
    if (owner) Object.assign(h, { uid: owner.uid, gid: owner.gid, uname: '', gname: '' });
    yield h.type === 'file' && h.size > 0 ? { header: h, body: e.body() } : { header: h };
  }
}

/** The source as a tar whose top entry is named `to`. */
function sourceTar(src: Source, to: string, owner: { uid: number; gid: number } | null): Readable {
  const tar = exportChanges(dirname(src.host), treeChanges(src.host));
  return writeTar(renamed(tar, basename(src.host), to, owner));
}

function extract(dir: string, tar: AsyncIterable<Buffer>): Promise<unknown> {
  // Naive format: deletions (none in a copy) would remove files, never write overlay whiteouts into a volume.
  return applyLayer(dir, tar, { whiteouts: 'naive' }).catch((e) => {
    if (isErrno(e, 'EROFS')) throw new StrataError('ErrForbidden', `cannot copy into ${dir}: read-only file system`, e);
    throw e;
  });
}

/**
 * Entries of a copy into container directory `dirC` that would land on a mount point below it would be
 * written into the layer under the mount: refused (copy into the mount's path instead). Null when no
 * mount lies below `dirC`, the common case.
 */
function crossingGuard(view: ContainerView, dirC: string): ((name: string) => void) | null {
  const below = view.mounts.filter((m) => m.Destination !== dirC && m.Destination.startsWith(dirC === '/' ? '/' : dirC + '/'));
  if (below.length === 0) return null;
  return (name) => {
    const c = posix.join(dirC, name).replace(/(.)\/$/, '$1');
    const m = below.find((x) => c === x.Destination || c.startsWith(x.Destination + '/'));
    if (m) throw invalidArgument(`cannot copy ${name}: it crosses the mount point ${m.Destination}; copy into ${m.Destination} itself`);
  };
}

function containerDest(view: ContainerView, p: string, shown: string): Dest & { containerPath: string } {
  if (!p.startsWith('/')) p = '/' + p;
  const r = resolveContainerPath(view, p, true);
  if (r.mount && !r.mount.RW) throw new StrataError('ErrForbidden', `cannot copy to ${shown}: mounted volume is marked read-only`);
  if (!r.mount && view.readonlyRootfs) throw new StrataError('ErrForbidden', `cannot copy to ${shown}: container rootfs is marked read-only`);
  return { host: r.host, stat: lstatSync(r.host, { throwIfNoEntry: false }), assertsDir: assertsDir(p), shown, containerPath: r.containerPath };
}

/**
 * `cp SRC CONTAINER:DST` and `cp - CONTAINER:DST`: a host path, or a tar stream extracted into the
 * existing directory DST. Paths resolve inside the container, through its volumes and binds; without
 * `archive` what is written is owned by the container's root (0:0).
 */
export async function copyToContainer(s: Stores, idOrName: string, dstPath: string, source: { path: string } | { tar: AsyncIterable<Buffer> }, opts: CopyOptions = {}): Promise<void> {
  const c = await s.containers.resolve(idOrName);
  const owner = opts.archive ? null : { uid: 0, gid: 0 };
  const src = 'path' in source ? hostSource(source.path, opts) : null;
  await withContainerView(s, c, async (view) => {
    const dst = containerDest(view, dstPath, `${idOrName}:${dstPath}`);
    if (src === null) {
      if (!dst.stat?.isDirectory()) throw invalidArgument(`destination "${idOrName}:${dstPath}" must be a directory`);
      const tar = (source as { tar: AsyncIterable<Buffer> }).tar;
      const guard = crossingGuard(view, dst.containerPath) ?? undefined;
      await extract(dst.host, owner || guard ? writeTar(renamed(tar, null, '', owner, guard)) : tar);
      return;
    }
    const { dir, to } = placement(src, dst);
    const guard = crossingGuard(view, dst.stat?.isDirectory() ? dst.containerPath : posix.dirname(dst.containerPath));
    // Checked on the whole source list first, so a refused copy writes nothing.
    if (guard) for (const ch of treeChanges(src.host)) guard(posix.join(to, ch.path.split('/').slice(2).join('/')));
    await extract(dir, sourceTar(src, to, owner));
  });
}

/** `cp CONTAINER:SRC DST`: onto the host with docker's placement rules; owners become this process' unless `archive`. */
export async function copyFromContainer(s: Stores, idOrName: string, srcPath: string, dstPath: string, opts: CopyOptions = {}): Promise<void> {
  const c = await s.containers.resolve(idOrName);
  await withContainerView(s, c, async (view) => {
    const src = containerSource(view, srcPath.startsWith('/') ? srcPath : '/' + srcPath, idOrName, opts);
    let host = resolveHost(dstPath);
    let stat = lstatSync(host, { throwIfNoEntry: false });
    // A destination that is a symlink is followed, as docker's CopyInfoDestinationPath does.
    if (stat?.isSymbolicLink()) {
      const real = (() => {
        try {
          return realpathSync(host);
        } catch {
          return null;
        }
      })();
      if (real !== null) [host, stat] = [real, lstatSync(real)];
    }
    const { dir, to } = placement(src, { host, stat, assertsDir: assertsDir(dstPath), shown: dstPath });
    await extract(dir, sourceTar(src, to, opts.archive ? null : { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }));
  });
}

/** `cp CONTAINER:SRC -`: the source as a tar named after its last component; the view is held until the stream ends. */
export async function copyFromContainerTar(s: Stores, idOrName: string, srcPath: string, opts: CopyOptions = {}): Promise<Readable> {
  const c = await s.containers.resolve(idOrName);
  const { view, release } = await openContainerView(s, c);
  let tar: Readable;
  try {
    const src = containerSource(view, srcPath.startsWith('/') ? srcPath : '/' + srcPath, idOrName, opts);
    tar = sourceTar(src, src.contentsOnly ? '.' : src.name, null);
  } catch (e) {
    await release();
    throw e;
  }
  async function* released(): AsyncGenerator<Buffer> {
    try {
      yield* tar;
    } finally {
      await release();
    }
  }
  return Readable.from(released(), { objectMode: false });
}
