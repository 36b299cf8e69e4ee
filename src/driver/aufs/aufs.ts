import { accessSync, constants as C, existsSync, mkdirSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { mkdir, realpath, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { ApplyHooks, Change, CreateOpts, Driver, DriverFactory, DriverOptions } from '../driver.js';
import type { UnionFs } from '../../union/union-fs.js';
import { openUnion } from '../../union/open-union.js';
import { native, MNT_DETACH } from '../../native/native.js';
import { capability, conflict, internal, invalidArgument, isErrno, isStrataError, limit, notFound } from '../../errors.js';
import { applyLayer } from '../../archive/apply-layer.js';
import { changesOverlay } from '../../archive/changes.js';
import { exportAufsLayer } from '../../archive/export-changes.js';
import { aufsForm } from '../../archive/whiteout-form.js';
import { backingFsName } from '../fs-magic.js';
import { acquireMount, releaseMount, updateMountRefs } from '../mount-refs.js';
import { populateThroughGet } from '../populate.js';
import { coverLowerDirs } from '../cover-lower-dirs.js';
import { ensureRemoveAll } from '../ensure-remove.js';
import { naiveApplyDiff, naiveChanges, naiveDiff, naiveDiffSize } from '../naive-diff.js';
import { treeSize } from '../tree-size.js';
import { fuseMounter } from '../fuse-overlayfs/fuse-overlayfs.js';
import { AufsLayout } from './aufs-layout.js';
import { normaliseUpper } from './normalise-upper.js';
import { HeldMounts } from '../held-mounts.js';

/** Kernel AUFS's default branch limit: a layer and its ancestors stay within it. */
const MAX_BRANCHES = 127;

/**
 * Docker's aufs graphdriver layout, served without kernel AUFS: everything strata does to layers
 * (apply, diff, changes, sizes, the init layer, openFs) reads and writes the AUFS on-disk form
 * directly or through the userspace union, with no mount and no root. Only get(), for processes that
 * need a real path to the union, mounts it with fuse-overlayfs (which reads `.wh.` whiteouts); the
 * last put() turns what fuse-overlayfs wrote into the upper back into the AUFS form.
 */
export class AufsDriver implements Driver {
  readonly name = 'aufs';
  /** Gets this process holds and has not put, released by cleanup(). */
  private readonly held = new HeldMounts();
  private readonly layout: AufsLayout;

  private constructor(
    readonly home: string,
    /** Not root: layers keep the caller's ownership (see ApplyOptions.rootless). */
    private readonly rootless: boolean,
  ) {
    this.layout = new AufsLayout(home);
  }

  static async init(opts: DriverOptions): Promise<AufsDriver> {
    for (const key of Object.keys(opts.options)) throw invalidArgument(`aufs: unknown option ${key}`);
    await mkdir(opts.root, { recursive: true });
    const home = join(await realpath(opts.root), 'aufs');
    await mkdir(home, { recursive: true, mode: 0o700 });
    for (const d of AufsLayout.DIRS) await mkdir(join(home, d), { recursive: true, mode: 0o700 });
    return new AufsDriver(home, process.getuid?.() !== 0);
  }

  /** The layer's ancestors, nearest first; ErrNotFound when it does not exist. */
  private mustExist(id: string): string[] {
    const ancestors = this.layout.ancestors(id);
    if (ancestors === null) throw notFound(`aufs: layer ${id} does not exist`);
    return ancestors;
  }

  private what(id: string): string {
    return `aufs: layer ${id}`;
  }

  async create(id: string, parent: string | null, opts?: CreateOpts): Promise<void> {
    if (Object.keys(opts?.storageOpt ?? {}).length > 0) throw invalidArgument('--storage-opt is not supported for aufs');
    const chain = parent === null ? [] : [parent, ...this.mustExist(parent)];
    if (chain.length + 1 > MAX_BRANCHES) throw limit(`aufs: max depth exceeded: a layer can have at most ${MAX_BRANCHES - 1} ancestors`);
    const diff = this.layout.diff(id);
    try {
      mkdirSync(diff, { mode: 0o755 });
    } catch (e) {
      if (isErrno(e, 'EEXIST')) throw invalidArgument(`aufs: layer ${id} already exists`);
      throw e;
    }
    // Synchronous: a container create makes two layers, and these tiny syscalls cost less than threadpool round trips.
    try {
      mkdirSync(this.layout.mnt(id), { mode: 0o755 });
      mkdirSync(this.layout.state(id), { mode: 0o700 });
      // A layer with children is a lower from now on: mounted read-only, opened read-only.
      if (parent !== null) writeFileSync(this.layout.stateFile(parent, 'committed'), '', { mode: 0o600 });
      // Written last: exists() answers from it.
      writeFileSync(this.layout.layersFile(id), AufsLayout.layersText(chain));
    } catch (e) {
      await this.removeFiles(id);
      throw e;
    }
  }

  createReadWrite(id: string, parent: string | null, opts?: CreateOpts): Promise<void> {
    return this.create(id, parent, opts);
  }

  private async removeFiles(id: string): Promise<void> {
    await rm(this.layout.layersFile(id), { force: true });
    await ensureRemoveAll(this.layout.mnt(id));
    await ensureRemoveAll(this.layout.diff(id));
    await rm(this.layout.state(id), { recursive: true, force: true });
  }

  async remove(id: string): Promise<void> {
    try {
      // Under the mount lock, so no other process mounts the layer while it goes away.
      await updateMountRefs(this.layout.stateFile(id, 'mount-count'), this.layout.mnt(id), this.what(id), async () => {
        await this.removeFiles(id);
        return 0;
      });
    } catch (e) {
      if (!isStrataError(e, 'ErrNotFound')) throw e; // never created, or removed meanwhile by another process
      await this.removeFiles(id);
    }
    this.held.forget(id);
  }

  async get(id: string): Promise<string> {
    const ancestors = this.mustExist(id);
    // A base layer is its own view: nothing to stack, so nothing to mount.
    if (ancestors.length === 0) return this.layout.diff(id);
    const mnt = this.layout.mnt(id);
    await acquireMount(this.layout.stateFile(id, 'mount-count'), mnt, this.what(id), () => this.mount(id, ancestors));
    this.held.add(id);
    return mnt;
  }

  private async mount(id: string, ancestors: string[]): Promise<void> {
    try {
      accessSync('/dev/fuse', C.R_OK | C.W_OK);
    } catch {
      throw capability(`aufs: cannot mount layer ${id} for processes: /dev/fuse is not usable here (no root?); openFs, diff and commit need no mount`);
    }
    const lowers = ancestors.map((a) => this.layout.diff(a));
    const diff = this.layout.diff(id);
    let options: string;
    if (existsSync(this.layout.stateFile(id, 'committed'))) {
      options = `lowerdir=${[diff, ...lowers].join(':')}`;
    } else {
      const work = this.layout.stateFile(id, 'work');
      mkdirSync(work, { recursive: true, mode: 0o700 });
      options = `lowerdir=${lowers.join(':')},upperdir=${diff},workdir=${work}`;
      // fuse-overlayfs writes its own whiteout forms into diff/ from now on: put() turns them back.
      writeFileSync(this.layout.stateFile(id, 'dirty'), '');
    }
    if (options.length > fuseMounter.maxOptions) throw limit(`aufs: cannot mount layer ${id}: mount options too long (${options.length} bytes)`);
    try {
      await fuseMounter.mount(this.layout.mnt(id), options);
    } catch (e) {
      if (isStrataError(e, 'ErrCapability')) throw capability(`aufs: cannot mount layer ${id} for processes: ${e.message}`, e);
      throw internal(`aufs: error mounting layer ${id} with fuse-overlayfs: ${(e as Error).message}`, e);
    }
  }

  async put(id: string): Promise<void> {
    const ancestors = this.mustExist(id);
    if (ancestors.length === 0) return;
    const mnt = this.layout.mnt(id);
    await releaseMount(this.layout.stateFile(id, 'mount-count'), mnt, this.what(id), async (mounted) => {
      if (mounted) native.umount(mnt, MNT_DETACH);
      this.normaliseIfDirty(id, ancestors);
    });
    this.held.release(id);
  }

  /** Back to the AUFS form after fuse-overlayfs wrote into the layer; only while it is not mounted. */
  private normaliseIfDirty(id: string, ancestors: string[]): void {
    const dirty = this.layout.stateFile(id, 'dirty');
    if (!existsSync(dirty)) return;
    normaliseUpper(this.layout.diff(id), ancestors.map((a) => this.layout.diff(a)));
    unlinkSync(dirty);
  }

  /**
   * Whether diff/<id> is in AUFS form and can be read directly: false while fuse-overlayfs has it
   * mounted read-write (reads then go through the mount); a layer left dirty by a crash is normalised here.
   */
  private async settled(id: string, ancestors: string[]): Promise<boolean> {
    if (!existsSync(this.layout.stateFile(id, 'dirty'))) return true;
    let clean = false;
    await updateMountRefs(this.layout.stateFile(id, 'mount-count'), this.layout.mnt(id), this.what(id), async ({ count, mounted }) => {
      if (!mounted) this.normaliseIfDirty(id, ancestors);
      clean = !mounted;
      return count;
    });
    return clean;
  }

  /**
   * Fill a new read-write layer once (a container's init layer) by writing straight into diff/<id>,
   * with no mount: what the fill makes there shadows the ancestors as it would through a mount, and
   * directories it had to make take the attributes of those they cover.
   */
  async populate(id: string, fill: (root: string) => Promise<void>): Promise<void> {
    const ancestors = this.mustExist(id);
    if (existsSync(this.layout.stateFile(id, 'committed')) || !(await this.settled(id, ancestors))) return populateThroughGet(this, id, fill);
    const diff = this.layout.diff(id);
    await fill(diff);
    coverLowerDirs(diff, ancestors.map((a) => this.layout.diff(a)), aufsForm);
  }

  /** The layer's full view as a userspace union: its own directory over its ancestors', read-only once it has children. */
  async openFs(id: string): Promise<UnionFs> {
    const ancestors = this.mustExist(id);
    if (!(await this.settled(id, ancestors))) throw conflict(`aufs: layer ${id} is mounted read-write by fuse-overlayfs; use its mount until the last put`);
    const top = { path: this.layout.diff(id), mode: existsSync(this.layout.stateFile(id, 'committed')) ? ('ro' as const) : ('rw' as const) };
    return openUnion([top, ...ancestors.map((a) => ({ path: this.layout.diff(a), mode: 'ro' as const }))]);
  }

  /** diff/<id> holds exactly what the layer's tar wrote (whiteouts as `.wh.` files), unless fuse-overlayfs has it mounted read-write. */
  async ownFilesDir(id: string): Promise<string | null> {
    return (await this.settled(id, this.mustExist(id))) ? this.layout.diff(id) : null;
  }

  async exists(id: string): Promise<boolean> {
    return existsSync(this.layout.layersFile(id));
  }

  async status(): Promise<Array<[string, string]>> {
    return [
      ['Root Dir', this.home],
      ['Backing Filesystem', backingFsName(this.home)],
      ['Dirs', String(readdirSync(join(this.home, 'diff')).length)],
      ['Dirperm1 Supported', 'false'],
      ['Union', 'userspace (no mount); fuse-overlayfs mounts for processes'],
    ];
  }

  // Docker's aufs driver has no GraphDriver.Data either.
  async metadata(id: string): Promise<Record<string, string>> {
    this.mustExist(id);
    return {};
  }

  /** Whether diff/<id> alone is the layer's diff against `parent` right now. */
  private async nativeApplies(id: string, parent: string | null): Promise<boolean> {
    const ancestors = this.mustExist(id);
    if ((ancestors[0] ?? null) !== parent) return false;
    return this.settled(id, ancestors);
  }

  async diff(id: string, parent: string | null): Promise<Readable> {
    if (!(await this.nativeApplies(id, parent))) return naiveDiff(this, id, parent);
    return exportAufsLayer(this.layout.diff(id));
  }

  async changes(id: string, parent: string | null): Promise<Change[]> {
    if (!(await this.nativeApplies(id, parent))) return naiveChanges(this, id, parent);
    return changesOverlay(this.layout.diff(id), this.mustExist(id).map((a) => this.layout.diff(a)), aufsForm);
  }

  /** Straight into diff/<id>, whiteouts kept as the tar has them; a base layer's hide nothing and are dropped. */
  async applyDiff(id: string, parent: string | null, tar: Readable, hooks?: ApplyHooks): Promise<number> {
    if (!(await this.nativeApplies(id, parent))) return naiveApplyDiff(this, id, tar, hooks);
    const whiteouts = parent === null ? 'naive' : 'aufs';
    const { size } = await applyLayer(this.layout.diff(id), tar, { whiteouts, rootless: this.rootless, onEntry: hooks?.onEntry, onTrailer: hooks?.onTrailer });
    return size;
  }

  async diffSize(id: string, parent: string | null): Promise<number> {
    if (!(await this.nativeApplies(id, parent))) return naiveDiffSize(this, id, parent);
    return treeSize(this.layout.diff(id));
  }

  /** Release every get this process still holds; mounts other processes hold stay up. */
  async cleanup(): Promise<void> {
    await this.held.releaseAll((id) => this.put(id));
  }
}

export const aufs: DriverFactory = { name: 'aufs', init: (opts) => AufsDriver.init(opts) };
