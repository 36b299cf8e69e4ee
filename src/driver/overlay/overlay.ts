import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, readdir, readFile, realpath, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import type { ApplyHooks, Change, CreateOpts, Driver, DriverFactory, DriverOptions } from '../driver.js';
import { native } from '../../native/native.js';
import { capability, internal, invalidArgument, isErrno, isStrataError, notFound } from '../../errors.js';
import { writeFileAtomic } from '../../util/atomic.js';
import { copyTree } from '../../util/copy-tree.js';
import { execTool } from '../../util/exec.js';
import { applyLayer } from '../../archive/apply-layer.js';
import { changesOverlay } from '../../archive/changes.js';
import { exportOverlayUpper } from '../../archive/export-changes.js';
import { backingFsName } from '../fs-magic.js';
import { acquireMount, releaseKernelMount, updateMountRefs } from '../mount-refs.js';
import { ensureRemoveAll } from '../ensure-remove.js';
import { naiveApplyDiff, naiveChanges, naiveDiff, naiveDiffSize } from '../naive-diff.js';
import { treeSize } from '../tree-size.js';
import { nativeDiffProblem, overlayMountProblem, supportsDType } from '../overlay2/overlay-support.js';
import { HeldMounts } from '../held-mounts.js';

function checkID(id: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id)) throw invalidArgument(`overlay: invalid layer id '${id}'`);
}

/**
 * Docker's legacy overlay graphdriver, for kernels whose overlayfs took a single lower directory.
 * A layer is either committed, `<id>/root`: a full tree, made as a hardlink farm of its parent's root
 * plus its own diff when a layer tar is applied (so image layers share every unchanged inode); or
 * read-write, `<id>/{lower-id,upper,work,merged}`: an upper directory mounted over the root of the
 * layer named in lower-id. A child of a read-write layer copies its upper and shares its lower-id,
 * so every mount has exactly one lower. Committed layers are read-only by contract: their inodes are
 * shared with their children. The kernel breaks a hardlink when it copies a file up, so writes in a
 * container never reach the shared inode. Docker removed this driver; strata keeps it to show it.
 */
export class OverlayDriver implements Driver {
  readonly name = 'overlay';
  private readonly held = new HeldMounts();

  private constructor(
    readonly home: string,
    private readonly backingFs: string,
    private readonly diffProblem: string | null,
  ) {}

  static async init(opts: DriverOptions): Promise<OverlayDriver> {
    for (const key of Object.keys(opts.options)) throw invalidArgument(`overlay: unknown option ${key}`);
    const unusable = (reason: string) => capability(`overlay: kernel overlayfs not usable here: ${reason}`);
    if (process.getuid?.() !== 0) throw unusable('not running as root');
    await mkdir(opts.root, { recursive: true });
    const home = join(await realpath(opts.root), 'overlay');
    const probeDir = existsSync(home) ? home : dirname(home);
    const backingFs = backingFsName(probeDir);
    const problem = await overlayMountProblem(probeDir);
    if (problem !== null) throw unusable(problem);
    if (!(await supportsDType(probeDir, backingFs))) {
      throw capability(`overlay: the backing ${backingFs} filesystem is formatted without d_type support; reformat it with ftype=1`);
    }
    await mkdir(home, { recursive: true, mode: 0o700 });
    return new OverlayDriver(home, backingFs, await nativeDiffProblem(home));
  }

  private dir(id: string): string {
    checkID(id);
    return join(this.home, id);
  }

  private mustExist(id: string): string {
    const dir = this.dir(id);
    if (!existsSync(dir)) throw notFound(`overlay: layer ${id} does not exist`);
    return dir;
  }

  /** The layer a read-write layer is mounted over, or null for a committed layer. */
  private async lowerID(id: string): Promise<string | null> {
    try {
      return (await readFile(join(this.dir(id), 'lower-id'), 'utf8')).trim();
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return null;
      throw e;
    }
  }

  async create(id: string, parent: string | null, opts?: CreateOpts): Promise<void> {
    for (const key of Object.keys(opts?.storageOpt ?? {})) {
      throw invalidArgument(key === 'size' ? 'overlay: --storage-opt size is not supported (use overlay2 on xfs with pquota)' : `overlay: unknown storage option ${key}`);
    }
    const dir = this.dir(id);
    const parentDir = parent === null ? null : this.mustExist(parent);
    try {
      await mkdir(dir, { mode: 0o700 });
    } catch (e) {
      if (isErrno(e, 'EEXIST')) throw invalidArgument(`overlay: layer ${id} already exists`);
      throw e;
    }
    try {
      if (parentDir === null) {
        await mkdir(join(dir, 'root'), { mode: 0o755 });
        return;
      }
      const parentLower = await this.lowerID(parent!);
      const lowerID = parentLower ?? parent!;
      if (parentLower === null) {
        // Over a committed parent: an empty upper that looks like the parent's root.
        const st = await stat(join(parentDir, 'root'));
        await mkdir(join(dir, 'upper'));
        await chown(join(dir, 'upper'), st.uid, st.gid);
        await chmod(join(dir, 'upper'), st.mode & 0o7777);
      } else {
        // Over a read-write parent: its changes copied, the same single lower.
        await copyTree(join(parentDir, 'upper'), join(dir, 'upper'));
      }
      await mkdir(join(dir, 'work'), { mode: 0o700 });
      await writeFileAtomic(join(dir, 'lower-id'), lowerID);
    } catch (e) {
      await ensureRemoveAll(dir);
      throw e;
    }
  }

  createReadWrite(id: string, parent: string | null, opts?: CreateOpts): Promise<void> {
    return this.create(id, parent, opts);
  }

  async remove(id: string): Promise<void> {
    const dir = this.dir(id);
    if (!existsSync(dir)) return;
    try {
      await updateMountRefs(join(dir, 'mount-count'), join(dir, 'merged'), `overlay: layer ${id}`, async () => {
        await ensureRemoveAll(dir);
        return 0;
      });
    } catch (e) {
      if (!isStrataError(e, 'ErrNotFound')) throw e;
    }
    this.held.forget(id);
  }

  async get(id: string): Promise<string> {
    const dir = this.mustExist(id);
    const lower = await this.lowerID(id);
    if (lower === null) return join(dir, 'root');
    const merged = join(dir, 'merged');
    await acquireMount(join(dir, 'mount-count'), merged, `overlay: layer ${id}`, async () => {
      await mkdir(merged, { recursive: true, mode: 0o700 });
      const data = `lowerdir=${join(this.dir(lower), 'root')},upperdir=${join(dir, 'upper')},workdir=${join(dir, 'work')}`;
      try {
        native.mount('overlay', merged, 'overlay', 0, data);
      } catch (e) {
        throw internal(`overlay: error creating overlay mount to ${merged}: ${(e as Error).message}`, e);
      }
    });
    this.held.add(id);
    return merged;
  }

  async put(id: string): Promise<void> {
    const dir = this.mustExist(id);
    if ((await this.lowerID(id)) === null) return;
    await releaseKernelMount(join(dir, 'mount-count'), join(dir, 'merged'), `overlay: layer ${id}`);
    this.held.release(id);
  }

  async exists(id: string): Promise<boolean> {
    return existsSync(this.dir(id));
  }

  /** Hardlink farms cost inodes rather than bytes, so `info` shows inode use of the backing filesystem. */
  async status(): Promise<Array<[string, string]>> {
    const s = native.statfs(this.home);
    return [
      ['Backing Filesystem', this.backingFs],
      ['Supports d_type', 'true'],
      ['Inodes used', String(s.files - s.ffree)],
      ['Inodes total', String(s.files)],
    ];
  }

  async metadata(id: string): Promise<Record<string, string>> {
    const dir = this.mustExist(id);
    const lower = await this.lowerID(id);
    if (lower === null) return { RootDir: join(dir, 'root') };
    return { LowerDir: join(this.dir(lower), 'root'), MergedDir: join(dir, 'merged'), UpperDir: join(dir, 'upper'), WorkDir: join(dir, 'work') };
  }

  /** Whether the upper directory alone is the diff against `parent`: a read-write layer right over it. */
  private async nativeApplies(id: string, parent: string | null): Promise<boolean> {
    this.mustExist(id);
    return this.diffProblem === null && parent !== null && (await this.lowerID(id)) === parent;
  }

  async diff(id: string, parent: string | null): Promise<Readable> {
    if (!(await this.nativeApplies(id, parent))) return naiveDiff(this, id, parent);
    return exportOverlayUpper(join(this.dir(id), 'upper'));
  }

  async changes(id: string, parent: string | null): Promise<Change[]> {
    if (!(await this.nativeApplies(id, parent))) return naiveChanges(this, id, parent);
    return changesOverlay(join(this.dir(id), 'upper'), join(this.dir(parent!), 'root'));
  }

  async diffSize(id: string, parent: string | null): Promise<number> {
    if (!(await this.nativeApplies(id, parent))) return naiveDiffSize(this, id, parent);
    return treeSize(join(this.dir(id), 'upper'));
  }

  /**
   * A fresh layer right over a committed parent becomes committed (Docker's way): its root is a
   * hardlink farm of the parent's root with the tar applied on top, deletions as plain removals.
   * Anything else goes through the layer's view.
   */
  async applyDiff(id: string, parent: string | null, tar: Readable, hooks?: ApplyHooks): Promise<number> {
    const dir = this.mustExist(id);
    const apply = async (root: string) =>
      (await applyLayer(root, tar, { whiteouts: 'naive', onEntry: hooks?.onEntry, onTrailer: hooks?.onTrailer })).size;
    const lower = await this.lowerID(id);
    if (lower === null && parent === null) return apply(join(dir, 'root'));
    if (lower === null || lower !== parent || (await readdir(join(dir, 'upper'))).length > 0) return naiveApplyDiff(this, id, tar, hooks);
    let size: number | null = null;
    // Under the mount lock: nobody mounts the layer while its upper turns into a root.
    await updateMountRefs(join(dir, 'mount-count'), join(dir, 'merged'), `overlay: layer ${id}`, async ({ mounted, count }) => {
      if (mounted) return count; // in use: applied through the view, below, once the lock is released
      const tmp = join(dir, 'tmproot');
      await rm(tmp, { recursive: true, force: true });
      await execTool('cp', ['-a', '--link', '--', join(this.dir(parent), 'root') + '/.', tmp]);
      size = await apply(tmp);
      await rename(tmp, join(dir, 'root'));
      // lower-id goes last: until then the layer still reads as read-write over its parent.
      for (const name of ['upper', 'work', 'merged']) await rm(join(dir, name), { recursive: true, force: true });
      await rm(join(dir, 'lower-id'));
      return 0;
    });
    return size ?? naiveApplyDiff(this, id, tar, hooks);
  }

  async cleanup(): Promise<void> {
    await this.held.releaseAll((id) => this.put(id));
  }
}

export const overlay: DriverFactory = { name: 'overlay', init: (opts) => OverlayDriver.init(opts) };
