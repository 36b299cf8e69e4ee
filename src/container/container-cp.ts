import { createReadStream, createWriteStream, lstatSync, readdirSync, realpathSync, statSync, type Stats } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join, posix, resolve as resolveHost } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Stores } from '../stores.js';
import type { Change } from '../driver/driver.js';
import { StrataError, invalidArgument, isErrno, notFound } from '../errors.js';
import { exportChanges, exportFsTree } from '../archive/export-changes.js';
import { applyLayer } from '../archive/apply-layer.js';
import { applyToFs } from '../archive/apply-to-fs.js';
import { cleanEntryName } from '../archive/root-path.js';
import { readTar } from '../archive/tar/tar-reader.js';
import { writeTar, type TarWriteEntry } from '../archive/tar/tar-writer.js';
import type { UnionFs } from '../union/union-fs.js';
import { hostOf, lstatIn, openContainerView, resolveContainerPath, withContainerView, type ContainerView } from './container-path.js';
import type { MountPoint } from './mount-spec.js';
import { unionXattrs } from './union-xattrs.js';

/** `cp -a` keeps owners; `-L` follows a symlink given as the source. */
export interface CopyOptions {
  archive?: boolean;
  followLink?: boolean;
}

/** A path on the host (in the container's view or not), or in the container's fs (its rootfs with no mount). */
type At = { host: string } | { fs: UnionFs; path: string };

const parentOf = (at: At): At => ('host' in at ? { host: dirname(at.host) } : { fs: at.fs, path: posix.dirname(at.path) });
const nameOf = (at: At): string => ('host' in at ? basename(at.host) : posix.basename(at.path));

/** What is copied, and the name it is copied as. */
interface Source {
  at: At;
  isDir: boolean;
  name: string;
  /** `dir/.`: the directory's content, not the directory. */
  contentsOnly: boolean;
  /** Mounts inside a container directory, shallowest first: their sources replace what the layer has there. */
  inner: Inner[];
}

/** A mount inside a copied container directory: its host source, at `at` relative to the directory. */
interface Inner {
  host: string;
  at: string;
}

interface Dest {
  at: At;
  stat: Stats | undefined;
  /** Whether the destination's parent is a directory (a new entry can be made there). */
  parentIsDir: boolean;
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

/** `p` relative to container directory `top` when strictly below it, else null. */
function relBelow(top: string, p: string): string | null {
  const pre = top === '/' ? '/' : top + '/';
  return p.length > pre.length && p.startsWith(pre) ? p.slice(pre.length) : null;
}

/**
 * The mounts inside container directory `top`, shallowest first, that a copy out of it shows instead of the
 * layer (Docker copies with the mounts in place): those whose source exists and whose parents between `top`
 * and the mount point are directories or missing (a tree walk never reaches one behind a symlink or a file).
 */
async function innerMounts(view: ContainerView, top: string): Promise<Inner[]> {
  const reachable = async (at: string) => {
    let c = top;
    for (const part of at.split('/').slice(0, -1)) {
      c = posix.join(c, part);
      const st = await lstatIn(view, c);
      if (!st) return true;
      if (!st.isDirectory()) return false;
    }
    return true;
  };
  const out: Inner[] = [];
  for (const m of view.mounts) {
    const at = relBelow(top, m.Destination);
    if (at !== null && lstatSync(m.Source, { throwIfNoEntry: false }) && (await reachable(at))) out.push({ host: m.Source, at });
  }
  // view.mounts is longest destination first, so a mount's ancestors come after it.
  return out.reverse();
}

async function containerSource(view: ContainerView, p: string, shown: string, opts: CopyOptions): Promise<Source> {
  const r = await resolveContainerPath(view, p, opts.followLink === true || assertsDir(p));
  const st = await lstatIn(view, r.containerPath);
  if (!st) throw notFound(`Could not find the file ${p} in container ${shown}`);
  const name = lastName(p);
  const isDir = checkSourceType(st, p);
  const at = r.host !== null ? { host: r.host } : { fs: view.fs!, path: r.containerPath };
  return { at, isDir, name, contentsOnly: contentsOnly(p) || name === '.', inner: isDir ? await innerMounts(view, r.containerPath) : [] };
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
  return { at: { host: follow ? realpathSync(abs) : abs }, isDir: checkSourceType(st, p), name, contentsOnly: contentsOnly(p) || name === '.', inner: [] };
}

/**
 * Where the copy lands (docker's CopyInfoDestinationPath/PrepareArchiveCopy): into an existing directory
 * under the source's name (or its content for `dir/.`), over an existing file (a directory cannot be), or
 * as a new entry whose parent must exist; a path ending in `/` must be an existing directory for a file.
 */
function placement(src: Source, dst: Dest): { dir: At; to: string } {
  if (dst.stat?.isDirectory()) return { dir: dst.at, to: src.contentsOnly ? '.' : src.name };
  if (dst.stat) {
    if (src.isDir) throw invalidArgument(`cannot copy a directory to a file: ${dst.shown} is not a directory`);
    if (dst.assertsDir) throw invalidArgument(`${dst.shown} is not a directory`);
    return { dir: parentOf(dst.at), to: nameOf(dst.at) };
  }
  if (dst.assertsDir && !src.isDir) throw notFound(`destination directory ${dst.shown} does not exist`);
  if (!dst.parentIsDir) throw notFound(`cannot copy to ${dst.shown}: its parent directory does not exist`);
  return { dir: parentOf(dst.at), to: nameOf(dst.at) };
}

/** Every path of the tree at `host`, named below its parent (`/<base>/...`), for exportChanges; `skip` prunes paths (and what is below). */
function treeChanges(host: string, skip: ReadonlySet<string> = new Set()): Change[] {
  const base = basename(host);
  const out: Change[] = [{ path: `/${base}`, kind: 'A' }];
  if (!lstatSync(host).isDirectory()) return out;
  const stack: Array<[string, string]> = [[host, `/${base}`]];
  while (stack.length > 0) {
    const [dir, rel] = stack.pop()!;
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (skip.has(`${rel}/${e.name}`)) continue;
      out.push({ path: `${rel}/${e.name}`, kind: 'A' });
      if (e.isDirectory()) stack.push([`${dir}/${e.name}`, `${rel}/${e.name}`]);
    }
  }
  return out;
}

/** Renames top name `from` to `to` ('.' = the directory extracted into; a null `from` only cleans names). */
function topRenamer(from: string | null, to: string): (name: string) => string {
  return (n) => {
    const dir = n.endsWith('/');
    const x = n.replace(/^(\.\/)+/, '').replace(/\/+$/, '');
    const out = from === null ? x : x === from ? to : x.startsWith(from + '/') ? `${to}/${x.slice(from.length + 1)}` : x;
    return dir || out === '.' ? `${out}/` : out;
  };
}

/** Tar entries renamed by `rename` (null drops the entry), owners optionally replaced. */
async function* renamed(tar: AsyncIterable<Buffer>, rename: (name: string) => string | null, owner: { uid: number; gid: number } | null): AsyncGenerator<TarWriteEntry> {
  for await (const e of readTar(tar)) {
    const name = rename(e.header.name);
    if (name === null) continue;
    const h = { ...e.header, name };
    if (h.type === 'hardlink') h.linkname = rename(h.linkname) ?? h.linkname;
    if (owner) Object.assign(h, { uid: owner.uid, gid: owner.gid, uname: '', gname: '' });
    yield h.type === 'file' && h.size > 0 ? { header: h, body: e.body() } : { header: h };
  }
}

/** A tree as a tar whose top entry is named `base`: from the host, or through the container's fs (no mount). */
function treeTar(at: At, base: string, skip: ReadonlySet<string>): Readable {
  if ('fs' in at) return exportFsTree(at.fs, unionXattrs(at.fs), { path: at.path, as: base, skip });
  return exportChanges(dirname(at.host), treeChanges(at.host, skip));
}

/** The source as a tar whose top entry is named `to`; at each inner mount the tree continues in the mount's source. */
function sourceTar(src: Source, to: string, owner: { uid: number; gid: number } | null): Readable {
  const parts: Array<{ at: At; under: string }> = [{ at: src.at, under: '' }, ...src.inner.map((i) => ({ at: { host: i.host }, under: i.at }))];
  async function* entries(): AsyncGenerator<TarWriteEntry> {
    for (const part of parts) {
      // Any top name works (the renamer replaces it); a path in the container's fs has none of its own on the host.
      const base = 'host' in part.at ? basename(part.at.host) : 'top';
      // What the other parts show is pruned from this one's walk.
      const skip = new Set<string>();
      for (const o of parts) {
        const r = o === part ? null : part.under === '' ? o.under : relBelow('/' + part.under, '/' + o.under);
        if (r !== null) skip.add(`/${base}/${r}`);
      }
      yield* renamed(treeTar(part.at, base, skip), topRenamer(base, part.under === '' ? to : `${to}/${part.under}`), owner);
    }
  }
  return writeTar(entries());
}

/**
 * Extract a copy's tar into a directory: on the host with applyLayer, or through the container's fs with
 * applyToFs (no mount; as a user without root, what is written stays the user's, as in a rootless layer).
 */
function extract(dir: At, tar: AsyncIterable<Buffer>): Promise<unknown> {
  // Naive format: deletions (none in a copy) would remove files, never write overlay whiteouts into a volume.
  const done = 'host' in dir ? applyLayer(dir.host, tar, { whiteouts: 'naive' }) : applyToFs(dir.fs, dir.path, tar, { rootless: process.getuid?.() !== 0 });
  return done.catch((e) => {
    if (isErrno(e, 'EROFS') || isErrno((e as Error).cause, 'EROFS')) throw new StrataError('ErrForbidden', `cannot copy into ${'host' in dir ? dir.host : dir.path}: read-only file system`, e);
    throw e;
  });
}

/** Where an entry of a copy into a container lands: in `mount` (a mount inside the copied tree) or below the copy's own directory, at `rel`. */
interface Landing {
  mount: MountPoint | null;
  rel: string;
}

/**
 * Routing for a copy into container directory `dirC` whose tree starts at `topC` (counted itself when
 * `withTop`): an entry whose container path lies in a mount inside the tree lands in that mount's source
 * (longest destination wins, as for every path), as Docker's copy with the mounts in place does. Null when
 * no mount lies inside the tree, the common case.
 */
function router(view: ContainerView, dirC: string, topC: string, withTop: boolean): ((name: string) => Landing) | null {
  const inner = view.mounts.filter((m) => (withTop && m.Destination === topC) || relBelow(topC, m.Destination) !== null);
  if (inner.length === 0) return null;
  return (name) => {
    const rel = cleanEntryName(name);
    const c = rel === '' ? dirC : posix.join(dirC, rel);
    const { mount } = hostOf(view, c);
    if (mount === null || !inner.includes(mount)) return { mount: null, rel };
    return { mount, rel: c === mount.Destination ? '' : c.slice(mount.Destination.length + 1) };
  };
}

/**
 * Every landing checked before anything is written: a read-only mount refuses, a mount point is only
 * written over by a directory (Docker cannot remove a mount point either), a hard link stays on its side of
 * a mount point. Returns where entries land (null: the copy's own directory).
 */
async function checkLandings(tar: AsyncIterable<Buffer>, route: (name: string) => Landing, ctr: string): Promise<Set<MountPoint | null>> {
  const used = new Set<MountPoint | null>();
  for await (const e of readTar(tar)) {
    const h = e.header;
    const { mount, rel } = route(h.name);
    used.add(mount);
    if (h.type === 'hardlink') {
      const other = route(h.linkname).mount;
      if (other !== mount) throw invalidArgument(`cannot copy ${h.name}: a hard link cannot cross the mount point ${(mount ?? other)!.Destination}`);
    }
    if (mount === null) continue;
    if (!mount.RW) throw new StrataError('ErrForbidden', `cannot copy to ${ctr}:${mount.Destination}: mounted volume is marked read-only`);
    if ((rel === '' && h.type !== 'directory') || !lstatSync(mount.Source, { throwIfNoEntry: false })?.isDirectory()) {
      throw invalidArgument(`cannot copy ${h.name}: it would replace the mount point ${mount.Destination}`);
    }
  }
  return used;
}

/** A copy whose tree reaches mounts: checked whole, then written once per place it lands (`open` gives the tar again each time). */
async function copyAcross(dir: At, open: () => AsyncIterable<Buffer>, route: (name: string) => Landing, owner: { uid: number; gid: number } | null, ctr: string): Promise<void> {
  for (const target of await checkLandings(open(), route, ctr)) {
    const rename = (n: string) => {
      const { mount, rel } = route(n);
      return mount !== target ? null : rel === '' ? './' : n.endsWith('/') ? `${rel}/` : rel;
    };
    await extract(target === null ? dir : { host: target.Source }, writeTar(renamed(open(), rename, owner)));
  }
}

/** A tar from stdin kept in a private temporary file while `fn` runs, so it can be checked whole and read once per mount. */
async function withSpooled<T>(tar: AsyncIterable<Buffer>, fn: (open: () => AsyncIterable<Buffer>) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'strata-cp-'));
  try {
    const file = join(dir, 'in.tar');
    await pipeline(tar, createWriteStream(file, { mode: 0o600 }));
    return await fn(() => createReadStream(file, { highWaterMark: 1 << 20 }));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** A host destination, as given (a symlink at it is followed, as docker's CopyInfoDestinationPath does). */
function hostDest(p: string): Dest {
  let host = resolveHost(p);
  let stat = lstatSync(host, { throwIfNoEntry: false });
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
  return { at: { host }, stat, parentIsDir: lstatSync(dirname(host), { throwIfNoEntry: false })?.isDirectory() === true, assertsDir: assertsDir(p), shown: p };
}

async function containerDest(view: ContainerView, p: string, shown: string): Promise<Dest & { containerPath: string }> {
  if (!p.startsWith('/')) p = '/' + p;
  const r = await resolveContainerPath(view, p, true);
  if (r.mount && !r.mount.RW) throw new StrataError('ErrForbidden', `cannot copy to ${shown}: mounted volume is marked read-only`);
  if (!r.mount && view.readonlyRootfs) throw new StrataError('ErrForbidden', `cannot copy to ${shown}: container rootfs is marked read-only`);
  const base = { assertsDir: assertsDir(p), shown, containerPath: r.containerPath };
  if (r.host !== null) {
    return { ...base, at: { host: r.host }, stat: lstatSync(r.host, { throwIfNoEntry: false }), parentIsDir: lstatSync(dirname(r.host), { throwIfNoEntry: false })?.isDirectory() === true };
  }
  // The rootfs read through the view's fs: the parent is looked up as any container path, through the mounts.
  const parent = await lstatIn(view, posix.dirname(r.containerPath));
  return { ...base, at: { fs: view.fs!, path: r.containerPath }, stat: await lstatIn(view, r.containerPath), parentIsDir: parent?.isDirectory() === true };
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
    const dst = await containerDest(view, dstPath, `${idOrName}:${dstPath}`);
    if (src === null) {
      if (!dst.stat?.isDirectory()) throw invalidArgument(`destination "${idOrName}:${dstPath}" must be a directory`);
      const tar = (source as { tar: AsyncIterable<Buffer> }).tar;
      const route = router(view, dst.containerPath, dst.containerPath, false);
      if (route !== null) await withSpooled(tar, (open) => copyAcross(dst.at, open, route, owner, idOrName));
      else await extract(dst.at, owner ? writeTar(renamed(tar, topRenamer(null, ''), owner)) : tar);
      return;
    }
    const { dir, to } = placement(src, dst);
    // Into an existing directory the tree's top is a new name there (a mount point itself, possibly); else it is the destination, resolved already.
    const into = dst.stat?.isDirectory() === true && to !== '.';
    const dirC = dst.stat?.isDirectory() ? dst.containerPath : posix.dirname(dst.containerPath);
    const route = router(view, dirC, into ? posix.join(dirC, to) : dst.containerPath, into);
    if (route !== null) await copyAcross(dir, () => sourceTar(src, to, owner), route, null, idOrName);
    else await extract(dir, sourceTar(src, to, owner));
  });
}

/** `cp CONTAINER:SRC DST`: onto the host with docker's placement rules; owners become this process' unless `archive`. */
export async function copyFromContainer(s: Stores, idOrName: string, srcPath: string, dstPath: string, opts: CopyOptions = {}): Promise<void> {
  const c = await s.containers.resolve(idOrName);
  await withContainerView(s, c, async (view) => {
    const src = await containerSource(view, srcPath.startsWith('/') ? srcPath : '/' + srcPath, idOrName, opts);
    const { dir, to } = placement(src, hostDest(dstPath));
    await extract(dir, sourceTar(src, to, opts.archive ? null : { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 }));
  });
}

/** `cp CONTAINER:SRC -`: the source as a tar named after its last component; the view is held until the stream ends. */
export async function copyFromContainerTar(s: Stores, idOrName: string, srcPath: string, opts: CopyOptions = {}): Promise<Readable> {
  const c = await s.containers.resolve(idOrName);
  const { view, release } = await openContainerView(s, c);
  let tar: Readable;
  try {
    const src = await containerSource(view, srcPath.startsWith('/') ? srcPath : '/' + srcPath, idOrName, opts);
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
