import { existsSync, mkdirSync, readlinkSync, symlinkSync, writeFileSync } from 'node:fs';
import { mkdir, realpath, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import type { ApplyHooks, Change, CreateOpts, Driver, DriverFactory, DriverOptions } from '../driver.js';
import { native } from '../../native/native.js';
import { capability, conflict, internal, invalidArgument, isErrno, isStrataError, limit, notFound } from '../../errors.js';
import { applyLayer } from '../../archive/apply-layer.js';
import { changesOverlay } from '../../archive/changes.js';
import { exportOverlayUpper } from '../../archive/export-changes.js';
import { backingFsName } from '../fs-magic.js';
import { acquireMount, releaseKernelMount, updateMountRefs } from '../mount-refs.js';
import { populateThroughGet } from '../populate.js';
import { coverLowerDirs } from '../cover-lower-dirs.js';
import { overlayForm } from '../../archive/whiteout-form.js';
import { ensureRemoveAll } from '../ensure-remove.js';
import { naiveApplyDiff, naiveChanges, naiveDiff, naiveDiffSize } from '../naive-diff.js';
import { parseSize } from '../size-units.js';
import { readOptionalSync } from '../../util/read-optional.js';
import { treeSize } from '../tree-size.js';
import { nativeDiffProblem, overlayMountProblem, readProbeVerdict, supportsDType, usingMetacopy, writeProbeVerdict } from './overlay-support.js';
import { ProjectQuota } from './project-quota.js';
import { HeldMounts } from '../held-mounts.js';

/** Lowers one layer may stack on; the layer store stops at 125 so init + read-write layers still fit. */
export const MAX_DEPTH = 128;
// 26 chars: (26 + "l/".length + ":".length) * 128 lowers = 3712 bytes of relative lowerdir, under one page.
const LINK_ID_LENGTH = 26;
const PAGE_SIZE = 4096;
const LINK_DIR = 'l';
const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** What the mechanism mounting the layout found at init. */
export interface OverlayFeatures {
  /** Why reading the upper directory would give a wrong diff here, or null when native diff is safe. */
  nativeDiffProblem: string | null;
  /** The driver's lines in `info`. */
  status: Array<[string, string]>;
}

/**
 * What mounts the layout: the kernel's overlayfs (overlay2) or the fuse-overlayfs program. Both take
 * the same `lowerdir=...,upperdir=...,workdir=...` options and read the same whiteouts.
 */
export interface OverlayMounter {
  /** Longest option string accepted. */
  readonly maxOptions: number;
  /** Mount at target (relative to cwd when given); relative paths in options resolve against cwd. */
  mount(target: string, options: string, cwd?: string): Promise<void>;
}

// Docker's overlayutils.GenerateID: 26 base32 characters (256 is a multiple of 32, so `& 31` is uniform).
function linkID(): string {
  return Array.from(randomBytes(LINK_ID_LENGTH), (b) => BASE32[b & 31]).join('');
}

function checkID(driver: string, id: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id) || id === LINK_DIR) throw invalidArgument(`${driver}: invalid layer id '${id}'`);
}

/** `<home>` and its `l/` short-link directory, with Docker's modes. */
export async function createLayoutHome(home: string): Promise<void> {
  await mkdir(home, { recursive: true, mode: 0o710 });
  await mkdir(join(home, LINK_DIR), { recursive: true, mode: 0o700 });
}

function kernelMounter(indexOff: boolean): OverlayMounter {
  const index = indexOff ? 'index=off,' : '';
  return {
    maxOptions: PAGE_SIZE - 1 - index.length,
    mount: async (target, options, cwd) => native.mount('overlay', target, 'overlay', 0, index + options, cwd),
  };
}

/**
 * Docker's overlay2 graphdriver: each layer is `<home>/<id>/{diff,link,lower,work,merged}`, stacked
 * by the kernel's overlayfs through short `l/<link>` symlinks so 128 lowers fit in one page of mount data.
 * The same layout mounted by another OverlayMounter is the fuse-overlayfs driver.
 */
export class Overlay2Driver implements Driver {
  /** Gets this process holds and has not put, released by cleanup(). */
  private readonly held = new HeldMounts();

  constructor(
    readonly name: string,
    readonly home: string,
    private readonly features: OverlayFeatures,
    private readonly mounter: OverlayMounter,
    private readonly quota: ProjectQuota | null = null,
    /** `overlay2.size`: the default size limit of read-write layers, 0 for none. */
    private readonly defaultSize = 0,
  ) {}

  static async init(opts: DriverOptions): Promise<Overlay2Driver> {
    let defaultSize = 0;
    for (const [key, value] of Object.entries(opts.options)) {
      if (key.toLowerCase() === 'overlay2.size') defaultSize = parseSize(value, 'overlay2.size');
      else throw invalidArgument(`overlay2: unknown option ${key}`);
    }
    const unusable = (reason: string) => capability(`overlay2: kernel overlayfs not usable here: ${reason}`);
    if (process.getuid?.() !== 0) throw unusable('not running as root');
    await mkdir(opts.root, { recursive: true });
    const home = join(await realpath(opts.root), 'overlay2');
    // Probe in the data-root when home does not exist yet, so a failed init leaves no overlay2 state behind.
    const probeDir = existsSync(home) ? home : dirname(home);
    const backingFs = backingFsName(probeDir);
    const known = existsSync(home) ? await readProbeVerdict(home) : undefined;
    if (known === undefined) {
      const problem = await overlayMountProblem(probeDir);
      if (problem !== null) throw unusable(problem);
      if (!(await supportsDType(probeDir, backingFs))) {
        throw capability(
          `overlay2: the backing ${backingFs} filesystem is formatted without d_type support, which leads to incorrect behavior. ` +
            'Reformat the filesystem with ftype=1 to enable d_type support. Backing filesystems without d_type support are not supported.',
        );
      }
    }
    const found = await ProjectQuota.detect(probeDir);
    if (typeof found === 'string' && defaultSize > 0) throw invalidArgument(`overlay2.size ${found}`);
    await createLayoutHome(home);
    const verdict = known ?? { nativeDiffProblem: await nativeDiffProblem(home) };
    if (known === undefined) await writeProbeVerdict(home, verdict);
    const diffProblem = verdict.nativeDiffProblem;
    const features: OverlayFeatures = {
      nativeDiffProblem: diffProblem,
      status: [
        ['Backing Filesystem', backingFs],
        ['Supports d_type', 'true'],
        ['Using metacopy', String(await usingMetacopy())],
        ['Native Overlay Diff', String(diffProblem === null)],
        ['userxattr', 'false'],
      ],
    };
    const mounter = kernelMounter(existsSync('/sys/module/overlay/parameters/index'));
    return new Overlay2Driver('overlay2', home, features, mounter, typeof found === 'string' ? null : found, defaultSize);
  }

  private dir(id: string): string {
    checkID(this.name, id);
    return join(this.home, id);
  }

  private async mustExist(id: string): Promise<string> {
    const dir = this.dir(id);
    if (!existsSync(dir)) throw notFound(`${this.name}: layer ${id} does not exist`);
    return dir;
  }

  async create(id: string, parent: string | null, opts?: CreateOpts): Promise<void> {
    if (opts?.storageOpt?.size !== undefined) throw invalidArgument('--storage-opt size is only supported for ReadWrite Layers');
    await this.createLayer(id, parent, opts, 0);
  }

  async createReadWrite(id: string, parent: string | null, opts?: CreateOpts): Promise<void> {
    const size = opts?.storageOpt?.size !== undefined ? parseSize(opts.storageOpt.size, 'size') : this.defaultSize;
    if (size > 0 && this.quota === null) throw invalidArgument("--storage-opt is supported only for overlay over xfs with 'pquota' mount option");
    await this.createLayer(id, parent, opts, size);
  }

  private async createLayer(id: string, parent: string | null, opts: CreateOpts | undefined, size: number): Promise<void> {
    for (const key of Object.keys(opts?.storageOpt ?? {})) {
      if (key !== 'size') throw invalidArgument(`${this.name}: unknown storage option ${key}`);
    }
    const dir = this.dir(id);
    const lower = parent === null ? null : await this.lowerFor(parent);
    // Synchronous calls: a container create makes two layers, and a dozen tiny syscalls cost less than
    // as many round trips through the threadpool.
    try {
      mkdirSync(dir, { mode: 0o701 });
    } catch (e) {
      if (isErrno(e, 'EEXIST')) throw invalidArgument(`${this.name}: layer ${id} already exists`);
      throw e;
    }
    let link: string | null = null;
    try {
      if (size > 0) await this.quota!.setQuota(dir, size);
      mkdirSync(join(dir, 'diff'), { mode: 0o755 });
      link = linkID();
      symlinkSync(`../${id}/diff`, join(this.home, LINK_DIR, link));
      // Written plainly, as Docker does: the layer becomes visible only at the layer store's synced
      // commit (a crash before it leaves an orphan to reap); per-file fsyncs here cost ~8 per container.
      writeFileSync(join(dir, 'link'), link);
      if (parent !== null) this.chain(dir, parent, lower!);
    } catch (e) {
      if (link !== null) await rm(join(this.home, LINK_DIR, link), { force: true });
      await rm(dir, { recursive: true, force: true });
      throw e;
    }
  }

  private chain(dir: string, parent: string, lower: string): void {
    mkdirSync(join(dir, 'work'), { mode: 0o700 });
    // A layer with children is mounted read-only from now on: its diff/ is shared as their lower.
    writeFileSync(join(this.home, parent, 'committed'), '', { mode: 0o600 });
    writeFileSync(join(dir, 'lower'), lower);
  }

  /** diff/ holds overlay whiteouts whatever lies below, so a layer filled on its own only needs its `lower` file. */
  async setParent(id: string, parent: string): Promise<void> {
    const dir = await this.mustExist(id);
    if (existsSync(join(dir, 'lower'))) throw conflict(`${this.name}: layer ${id} already has a parent`);
    this.chain(dir, parent, await this.lowerFor(parent));
  }

  /** The `lower` file of a child of `parent`: the parent's link first, then the parent's own lowers. */
  private async lowerFor(parent: string): Promise<string> {
    const pdir = await this.mustExist(parent);
    const link = readOptionalSync(join(pdir, 'link'));
    if (link === null || link === '') throw notFound(`${this.name}: parent layer ${parent} has no link`);
    const lowers = [`${LINK_DIR}/${link}`];
    const parentLower = readOptionalSync(join(pdir, 'lower'));
    if (parentLower) lowers.push(...parentLower.split(':'));
    if (lowers.length > MAX_DEPTH) throw limit(`${this.name}: max depth exceeded: a layer can have at most ${MAX_DEPTH} lower layers`);
    return lowers.join(':');
  }

  async remove(id: string): Promise<void> {
    const dir = this.dir(id);
    if (!existsSync(dir)) return;
    const link = readOptionalSync(join(dir, 'link'));
    if (link !== null && new RegExp(`^[${BASE32}]{${LINK_ID_LENGTH}}$`).test(link)) {
      await rm(join(this.home, LINK_DIR, link), { force: true });
    }
    try {
      // Under the mount lock, so no other process mounts the layer while it goes away.
      await updateMountRefs(join(dir, 'mount-count'), join(dir, 'merged'), `${this.name}: layer ${id}`, async () => {
        await ensureRemoveAll(dir);
        return 0;
      });
    } catch (e) {
      if (!isStrataError(e, 'ErrNotFound')) throw e; // removed meanwhile by another process
    }
    this.held.forget(id);
  }

  async get(id: string): Promise<string> {
    const dir = await this.mustExist(id);
    const lower = readOptionalSync(join(dir, 'lower'));
    // A base layer is its own diff: nothing to stack, so nothing to mount.
    if (lower === null) return join(dir, 'diff');
    const merged = join(dir, 'merged');
    await acquireMount(join(dir, 'mount-count'), merged, `${this.name}: layer ${id}`, () => this.mount(id, lower));
    this.held.add(id);
    return merged;
  }

  private async mount(id: string, lower: string): Promise<void> {
    const dir = join(this.home, id);
    const lowers = lower.split(':');
    const committed = existsSync(join(dir, 'committed'));
    const data = (lowerPaths: string[], d: string) =>
      committed
        ? `lowerdir=${d}/diff:${lowerPaths.join(':')}`
        : `lowerdir=${lowerPaths.join(':')},upperdir=${d}/diff,workdir=${d}/work`;
    await mkdir(join(dir, 'merged'), { recursive: true, mode: 0o700 });
    try {
      const absolute = data(lowers.map((l) => join(this.home, l)), dir);
      if (absolute.length <= this.mounter.maxOptions) {
        await this.mounter.mount(join(dir, 'merged'), absolute);
        return;
      }
      // Too long for one page: paths relative to home, resolved by a mount done from inside it.
      const relative = data(lowers, id);
      if (relative.length > this.mounter.maxOptions) throw limit(`${this.name}: cannot mount layer ${id}: mount data too large (${relative.length} bytes)`);
      await this.mounter.mount(`${id}/merged`, relative, this.home);
    } catch (e) {
      if (isStrataError(e)) throw e;
      throw internal(`${this.name}: error creating overlay mount to ${join(dir, 'merged')}: ${(e as Error).message}`, e);
    }
  }

  /**
   * Fill a new read-write layer once (a container's init layer) by writing straight into its upper
   * directory, with no mount: what the fill makes there shadows the lowers exactly as it would have
   * through a mount. Directories it had to make take the attributes of the ones they cover, as
   * overlayfs's copy-up would have given them. (A mount and its unmount, which syncs the whole upper
   * filesystem, were most of what a container create cost.)
   */
  async populate(id: string, fill: (root: string) => Promise<void>): Promise<void> {
    const dir = await this.mustExist(id);
    const lower = readOptionalSync(join(dir, 'lower'));
    if (!lower || existsSync(join(dir, 'committed'))) return populateThroughGet(this, id, fill);
    const upper = join(dir, 'diff');
    await fill(upper);
    // The lowers by their l/ links (no readlink each): lookups below a link resolve through it.
    coverLowerDirs(upper, lower.trim().split(':').map((l) => join(this.home, l)), overlayForm);
  }

  async put(id: string): Promise<void> {
    const dir = await this.mustExist(id);
    if (!existsSync(join(dir, 'lower'))) return;
    await releaseKernelMount(join(dir, 'mount-count'), join(dir, 'merged'), `${this.name}: layer ${id}`);
    this.held.release(id);
  }

  async exists(id: string): Promise<boolean> {
    return existsSync(this.dir(id));
  }

  async status(): Promise<Array<[string, string]>> {
    return this.features.status;
  }

  /** The lower layers' diff directories, uppermost first, with the `l/` links resolved. */
  private async lowerDirs(id: string): Promise<string[]> {
    const lower = readOptionalSync(join(this.home, id, 'lower'));
    if (!lower) return [];
    return lower.split(':').map((l) => join(this.home, LINK_DIR, readlinkSync(join(this.home, l))));
  }

  async metadata(id: string): Promise<Record<string, string>> {
    const dir = await this.mustExist(id);
    const lowers = await this.lowerDirs(id);
    return {
      ...(lowers.length > 0 ? { LowerDir: lowers.join(':') } : {}),
      MergedDir: join(dir, 'merged'),
      UpperDir: join(dir, 'diff'),
      WorkDir: join(dir, 'work'),
    };
  }

  /** Whether `parent` is the layer right below `id`, the only case where diff/ alone is the layer's diff. */
  private async isParent(id: string, parent: string | null): Promise<boolean> {
    await this.mustExist(id);
    const lowers = await this.lowerDirs(id);
    if (parent === null) return lowers.length === 0;
    return lowers.length > 0 && dirname(lowers[0]!) === this.dir(parent);
  }

  private async nativeApplies(id: string, parent: string | null): Promise<boolean> {
    return this.features.nativeDiffProblem === null && (await this.isParent(id, parent));
  }

  async diff(id: string, parent: string | null): Promise<Readable> {
    if (!(await this.nativeApplies(id, parent))) return naiveDiff(this, id, parent);
    return exportOverlayUpper(join(this.home, id, 'diff'));
  }

  async changes(id: string, parent: string | null): Promise<Change[]> {
    if (!(await this.nativeApplies(id, parent))) return naiveChanges(this, id, parent);
    // The lower diff dirs, with their own whiteouts, are the parent's view: no mount needed.
    return changesOverlay(join(this.home, id, 'diff'), await this.lowerDirs(id));
  }

  /** Straight into diff/ whenever `parent` is right below: the mechanism reads overlay whiteouts whether or not its diffs can be read back natively. */
  async applyDiff(id: string, parent: string | null, tar: Readable, hooks?: ApplyHooks): Promise<number> {
    if (!(await this.isParent(id, parent))) return naiveApplyDiff(this, id, tar, hooks);
    const { size } = await applyLayer(join(this.home, id, 'diff'), tar, { whiteouts: 'overlay', onEntry: hooks?.onEntry, onTrailer: hooks?.onTrailer });
    return size;
  }

  async diffSize(id: string, parent: string | null): Promise<number> {
    if (!(await this.nativeApplies(id, parent))) return naiveDiffSize(this, id, parent);
    return treeSize(join(this.home, id, 'diff'));
  }

  /** Release every get this process still holds; mounts other processes hold stay up. */
  async cleanup(): Promise<void> {
    await this.held.releaseAll((id) => this.put(id));
  }
}

export const overlay2: DriverFactory = { name: 'overlay2', init: (opts) => Overlay2Driver.init(opts) };
