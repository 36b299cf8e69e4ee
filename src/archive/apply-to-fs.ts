import { constants as C, type Stats } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { invalidArgument, isErrno } from '../errors.js';
import { native } from '../native/native.js';
import type { UnionFs } from '../union/union-fs.js';
import type { TarHeader } from './tar/tar-header.js';
import { readTar, type TarEntry } from './tar/tar-reader.js';
import { cleanEntryName, CheckedDirs, relDirname } from './root-path.js';
import { checkHardlinkTarget, DirTimes, entryBase, explainEntryError, hardlinkTarget, keepsExisting, metaSteps, setEntryTimes, skipsNode, xattrFailureTolerated } from './apply-rules.js';
import { WHITEOUT_PREFIX } from './whiteout.js';

const NODE_TYPE = { char: C.S_IFCHR, block: C.S_IFBLK, fifo: C.S_IFIFO } as const;

export interface FsApplyOptions {
  /** Not root: what is written keeps the caller's ownership and device nodes are skipped (ApplyOptions.rootless). */
  rootless?: boolean;
}

/**
 * Extract an uncompressed tar below directory `dir` of a union (a `cp` into a container with no mount),
 * with applyLayer's rules (apply-rules.ts). Entries are made through the union, which copies parents up
 * and drops or leaves whiteouts as it must; what its node:fs surface lacks (xattrs, nanosecond times, device
 * nodes) is done on the top branch's copy of the entry, which the union has just made. `dir` is a resolved
 * path (no symlink in it). A copy carries no deletions: `.wh.` names are refused. Returns the bytes written.
 */
export async function applyToFs(fs: UnionFs, dir: string, tar: AsyncIterable<Buffer>, opts: FsApplyOptions = {}): Promise<{ size: number }> {
  const applier = new FsApplier(fs, dir === '/' ? '' : dir.replace(/\/+$/, ''), opts.rootless ?? false);
  for await (const entry of readTar(tar)) {
    try {
      await applier.apply(entry);
    } catch (e) {
      throw explainEntryError(e, entry.header.name);
    }
  }
  await applier.finish();
  return { size: applier.size };
}

class FsApplier {
  size = 0;
  private readonly parents = new CheckedDirs();
  private readonly dirTimes = new DirTimes();
  private readonly top: string;
  private readonly rootBytes: number;

  constructor(
    private readonly fs: UnionFs,
    /** The union path entries land below ('' for the root). */
    private readonly dir: string,
    private readonly rootless: boolean,
  ) {
    this.top = fs.branches[0]!.path;
    this.rootBytes = Buffer.byteLength(this.top + dir) + 1;
  }

  /** Union path of a cleaned entry name. */
  private at(rel: string): string {
    return rel === '' ? this.dir || '/' : `${this.dir}/${rel}`;
  }

  /** The top branch's copy of an entry that the union just wrote (its path holds no symlink: parents are checked). */
  private host(rel: string): string {
    return this.top + this.at(rel);
  }

  async apply(entry: TarEntry): Promise<void> {
    const h = entry.header;
    const rel = cleanEntryName(h.name);
    const base = entryBase(h, rel, this.rootBytes);
    if (base.startsWith(WHITEOUT_PREFIX)) throw invalidArgument(`a copy cannot carry ${WHITEOUT_PREFIX} names (whiteouts of a layer)`);
    if (rel !== '') await this.ensureParents(relDirname(rel), true);
    const path = this.at(rel);
    switch (h.type) {
      case 'file':
        return this.file(rel, path, entry);
      case 'directory':
        return this.directory(rel, path, h);
      case 'symlink':
        await this.create(rel, path, () => this.fs.symlink(h.linkname, path));
        return this.metadata(rel, path, h, false);
      case 'hardlink':
        return this.hardlink(rel, path, h);
      case 'char':
      case 'block':
      case 'fifo':
        if (skipsNode(h, this.rootless)) return;
        // The union makes no nodes: an empty file puts the name in the top branch (parents copied up, any
        // whiteout of it gone), then the node replaces it there.
        await this.create(rel, path, () => this.fs.writeFile(path, '', { flag: 'wx', mode: 0o600 }));
        await unlink(this.host(rel));
        native.mknod(this.host(rel), NODE_TYPE[h.type] | h.mode, h.devmajor, h.devminor);
        return this.metadata(rel, path, h, true);
    }
  }

  async finish(): Promise<void> {
    // Every directory with times is in the top branch: directory() made or copied it up.
    for (const [rel, h] of this.dirTimes.deepestFirst()) setEntryTimes(this.host(rel), h);
  }

  private async lstat(path: string): Promise<Stats | undefined> {
    try {
      return await this.fs.lstat(path);
    } catch (e) {
      if (isErrno(e, 'ENOENT') || isErrno(e, 'ENOTDIR')) return undefined;
      throw e;
    }
  }

  /** SafeParents' walk, through the union: missing directories are made 0755 unless only checking. */
  private async ensureParents(relDir: string, create: boolean): Promise<void> {
    for (const rel of this.parents.unchecked(relDir)) {
      const st = await this.lstat(this.at(rel));
      this.parents.found(rel, st === undefined ? 'missing' : st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'dir' : 'other', create);
      if (st === undefined) await this.fs.mkdir(this.at(rel), 0o755);
    }
  }

  private async file(rel: string, path: string, entry: TarEntry): Promise<void> {
    const h = entry.header;
    const handle = await this.create(rel, path, () => this.fs.open(path, 'wx', 0o600));
    try {
      for await (const chunk of entry.body()) {
        for (let off = 0; off < chunk.length; ) off += (await handle.write(chunk, off, chunk.length - off)).bytesWritten;
      }
    } finally {
      await handle.close();
    }
    this.size += h.size;
    await this.metadata(rel, path, h, true);
  }

  private async directory(rel: string, path: string, h: TarHeader): Promise<void> {
    const st = rel === '' ? await this.fs.lstat(path) : await this.lstat(path);
    if (st === undefined || !keepsExisting(h, st)) {
      if (st !== undefined) await this.remove(rel, path, st);
      await this.fs.mkdir(path, 0o700);
    } else {
      // A kept directory may be in a lower branch only: copied up before its xattrs go on the top branch's copy.
      await this.fs.chmod(path, h.mode);
    }
    await this.metadata(rel, path, h, true);
    this.dirTimes.set(rel, h);
  }

  private async hardlink(rel: string, path: string, h: TarHeader): Promise<void> {
    const target = hardlinkTarget(h);
    // The target's parents must be real directories: a link through a symlink could reach anything.
    await this.ensureParents(relDirname(target), false);
    checkHardlinkTarget(h, await this.lstat(this.at(target)));
    if (target === rel) return;
    await this.create(rel, path, () => this.fs.link(this.at(target), path));
  }

  /** Owner and mode through the union (which copies the entry up), xattrs and times on the top branch's copy. */
  private async metadata(rel: string, path: string, h: TarHeader, chmod: boolean): Promise<void> {
    for (const s of metaSteps(h, this.rootless, chmod)) {
      if (s.op === 'chown') await this.fs.lchown(path, s.uid, s.gid);
      // chmod follows links: it is only asked for what this call made or a directory lstat saw (never a symlink).
      else if (s.op === 'chmod') await this.fs.chmod(path, s.mode);
      else this.xattr(this.host(rel), s.name, s.value);
    }
    if (h.type !== 'directory') setEntryTimes(this.host(rel), h);
  }

  private xattr(host: string, name: string, value: Buffer): void {
    try {
      native.lsetxattr(host, name, value);
    } catch (e) {
      if (!xattrFailureTolerated(e, this.rootless)) throw e;
    }
  }

  /** Make a node, replacing whatever is in the way. */
  private async create<T>(rel: string, path: string, make: () => Promise<T>): Promise<T> {
    try {
      return await make();
    } catch (e) {
      if (!isErrno(e, 'EEXIST')) throw e;
      await this.remove(rel, path, (await this.lstat(path))!);
      return make();
    }
  }

  private async remove(rel: string, path: string, st: Stats): Promise<void> {
    if (st.isDirectory()) {
      await this.fs.rm(path, { recursive: true });
      this.parents.forget(rel);
      this.dirTimes.forget(rel);
    } else {
      await this.fs.unlink(path);
    }
  }
}
