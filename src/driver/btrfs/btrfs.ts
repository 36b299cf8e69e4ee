import { existsSync } from 'node:fs';
import { lstat, mkdir, opendir, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { ApplyHooks, Change, CreateOpts, Driver, DriverFactory, DriverOptions } from '../driver.js';
import { native } from '../../native/native.js';
import { capability, invalidArgument, isStrataError, notFound } from '../../errors.js';
import { execTool } from '../../util/exec.js';
import { humanSize } from '../../util/human-size.js';
import { backingFsName } from '../fs-magic.js';
import { ensureRemoveAll } from '../ensure-remove.js';
import { naiveApplyDiff, naiveChanges, naiveDiff, naiveDiffSize } from '../naive-diff.js';
import { parseSize } from '../size-units.js';
import { ensurePool, isNoSpace, type Pool } from './btrfs-pool.js';

const COMPRESSIONS = ['zstd', 'lzo', 'zlib', 'none'] as const;
type Compression = (typeof COMPRESSIONS)[number];
/** The inode number of every subvolume's root directory (BTRFS_FIRST_FREE_OBJECTID). */
const SUBVOLUME_ROOT_INO = 256n;

interface BtrfsOptions {
  pool?: string;
  poolSize?: number;
  minSpace: number;
  compress: Compression;
}

function parseOptions(options: Record<string, string>): BtrfsOptions {
  const out: BtrfsOptions = { minSpace: 0, compress: 'none' };
  for (const [key, value] of Object.entries(options)) {
    switch (key.toLowerCase()) {
      case 'btrfs.pool':
        if (!value.startsWith('/')) throw invalidArgument(`btrfs: btrfs.pool must be an absolute path, not '${value}'`);
        out.pool = value;
        break;
      case 'btrfs.pool_size':
        out.poolSize = parseSize(value, 'btrfs.pool_size');
        break;
      case 'btrfs.min_space':
        out.minSpace = parseSize(value, 'btrfs.min_space');
        break;
      case 'btrfs.compress':
        if (!(COMPRESSIONS as readonly string[]).includes(value)) throw invalidArgument(`btrfs: btrfs.compress must be one of ${COMPRESSIONS.join(', ')}, not '${value}'`);
        out.compress = value as Compression;
        break;
      case 'btrfs.size':
      case 'size':
        throw invalidArgument(`btrfs: ${key} is not supported: strata does not use btrfs quota groups`);
      default:
        throw invalidArgument(`btrfs: unknown option ${key}`);
    }
  }
  return out;
}

function checkID(id: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id)) throw invalidArgument(`btrfs: invalid layer id '${id}'`);
}

const btrfs = (args: string[]) => execTool('btrfs', args);

/**
 * Docker's btrfs graphdriver: every layer is a subvolume `<home>/subvolumes/<id>`, a child a writable
 * snapshot of its parent (O(1), sharing every extent until written), removal a subvolume delete.
 * Layers are full trees, so diffs are computed by comparing a layer with its parent (naive diff).
 * On a data-root that is not btrfs, `btrfs.pool=FILE` gives a loop-mounted pool (see btrfs-pool.ts).
 * `btrfs.compress` sets the compression property of each new subvolume, which the files and
 * directories created in it inherit.
 */
export class BtrfsDriver implements Driver {
  readonly name = 'btrfs';

  private constructor(
    readonly home: string,
    private readonly opts: BtrfsOptions,
    private readonly pool: Pool | null,
    private readonly version: string,
  ) {}

  static async init(options: DriverOptions): Promise<BtrfsDriver> {
    const opts = parseOptions(options.options);
    if (process.getuid?.() !== 0) throw capability('btrfs: not running as root (subvolumes and loop mounts need it)');
    let version: string;
    try {
      version = (await btrfs(['--version'])).stdout.trim().replace(/^btrfs-progs\s+v?/, '');
    } catch (e) {
      if (isStrataError(e, 'ErrCapability')) throw capability('btrfs: btrfs-progs is not installed (the btrfs command is missing)', e);
      throw e;
    }
    await mkdir(options.root, { recursive: true });
    const root = await realpath(options.root);
    const home = join(root, 'btrfs');
    // Refuse before creating anything when the data-root cannot hold subvolumes and no pool is given.
    if (opts.pool === undefined && !existsSync(home) && backingFsName(root) !== 'btrfs') throw notBtrfs(root);
    await mkdir(home, { recursive: true, mode: 0o700 });
    const pool = await ensurePool(home, opts.pool, opts.poolSize);
    if (backingFsName(home) !== 'btrfs') throw notBtrfs(root);
    await mkdir(join(home, 'subvolumes'), { recursive: true, mode: 0o700 });
    return new BtrfsDriver(home, opts, pool, version);
  }

  private dir(id: string): string {
    checkID(id);
    return join(this.home, 'subvolumes', id);
  }

  private mustExist(id: string): string {
    const dir = this.dir(id);
    if (!existsSync(dir)) throw notFound(`btrfs: layer ${id} does not exist`);
    return dir;
  }

  private freeSpace(): number {
    const s = native.statfs(this.home);
    return s.bavail * s.bsize;
  }

  async create(id: string, parent: string | null, opts?: CreateOpts): Promise<void> {
    for (const key of Object.keys(opts?.storageOpt ?? {})) {
      if (key === 'size') throw invalidArgument('btrfs: --storage-opt size is not supported: strata does not use btrfs quota groups');
      throw invalidArgument(`btrfs: unknown storage option ${key}`);
    }
    const dir = this.dir(id);
    const parentDir = parent === null ? null : this.mustExist(parent);
    if (existsSync(dir)) throw invalidArgument(`btrfs: layer ${id} already exists`);
    if (this.opts.minSpace > 0 && this.freeSpace() < this.opts.minSpace) {
      throw capability(`btrfs: not enough free space to create layer ${id}: ${humanSize(this.freeSpace())} left, btrfs.min_space is ${humanSize(this.opts.minSpace)}`);
    }
    await this.noSpace(async () => {
      if (parentDir === null) await btrfs(['subvolume', 'create', dir]);
      else await btrfs(['subvolume', 'snapshot', parentDir, dir]);
      if (this.opts.compress !== 'none') await btrfs(['property', 'set', dir, 'compression', this.opts.compress]);
    });
  }

  createReadWrite(id: string, parent: string | null, opts?: CreateOpts): Promise<void> {
    return this.create(id, parent, opts);
  }

  /** Runs fn with a full pool (or filesystem) turned into one clear line. */
  private async noSpace<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (!isNoSpace(e)) throw e;
      const where = this.pool === null ? this.home : `the pool ${this.pool.file}`;
      throw capability(`btrfs: ${where} is full (no space left on device)`, e);
    }
  }

  async remove(id: string): Promise<void> {
    const dir = this.dir(id);
    if (!existsSync(dir)) return;
    // A plain directory is what an interrupted create leaves.
    if ((await lstat(dir, { bigint: true })).ino !== SUBVOLUME_ROOT_INO) return ensureRemoveAll(dir);
    try {
      await btrfs(['subvolume', 'delete', dir]);
    } catch (e) {
      if (!/Directory not empty/i.test((e as Error).message)) throw e;
      // Subvolumes a container created inside the layer go first (found by a walk, so only when there are some).
      for (const nested of await nestedSubvolumes(dir)) await btrfs(['subvolume', 'delete', nested]);
      await btrfs(['subvolume', 'delete', dir]);
    }
  }

  // Nothing is mounted per layer: a subvolume is a directory of the (pool) filesystem.
  async get(id: string): Promise<string> {
    return this.mustExist(id);
  }

  async put(id: string): Promise<void> {
    this.mustExist(id);
  }

  async exists(id: string): Promise<boolean> {
    return existsSync(this.dir(id));
  }

  async status(): Promise<Array<[string, string]>> {
    const lines: Array<[string, string]> = [
      ['Build Version', `Btrfs v${this.version}`],
      ['Library Version', this.version],
    ];
    if (this.pool !== null) {
      const s = native.statfs(this.home);
      lines.push(
        ['Pool', this.pool.file],
        ['Pool Device', this.pool.device],
        ['Pool Size', humanSize(s.blocks * s.bsize)],
        ['Pool Used', humanSize((s.blocks - s.bfree) * s.bsize)],
        ['Pool Available', humanSize(s.bavail * s.bsize)],
      );
    }
    lines.push(['Compression', this.opts.compress]);
    if (this.opts.minSpace > 0) lines.push(['Min Space', humanSize(this.opts.minSpace)]);
    return lines;
  }

  async metadata(id: string): Promise<Record<string, string>> {
    return { Subvolume: this.mustExist(id) };
  }

  diff(id: string, parent: string | null): Promise<Readable> {
    return naiveDiff(this, id, parent);
  }

  changes(id: string, parent: string | null): Promise<Change[]> {
    return naiveChanges(this, id, parent);
  }

  applyDiff(id: string, _parent: string | null, tar: Readable, hooks?: ApplyHooks): Promise<number> {
    return this.noSpace(() => naiveApplyDiff(this, id, tar, hooks));
  }

  diffSize(id: string, parent: string | null): Promise<number> {
    return naiveDiffSize(this, id, parent);
  }

  // The pool stays mounted: it belongs to the data-root (see btrfs-pool.ts).
  async cleanup(): Promise<void> {}
}

function notBtrfs(root: string) {
  return capability(`btrfs: ${root} is not on btrfs (give btrfs.pool=FILE to use a loop-mounted pool)`);
}

/** Subvolumes below `dir` (not dir itself), deepest first. */
async function nestedSubvolumes(dir: string): Promise<string[]> {
  const found: string[] = [];
  const stack = [dir];
  while (stack.length > 0) {
    const d = stack.pop()!;
    for await (const ent of await opendir(d)) {
      if (!ent.isDirectory()) continue;
      const p = join(d, ent.name);
      if ((await lstat(p, { bigint: true })).ino === SUBVOLUME_ROOT_INO) found.push(p);
      stack.push(p);
    }
  }
  return found.sort((a, b) => b.length - a.length);
}

export const btrfsDriver: DriverFactory = { name: 'btrfs', init: (opts) => BtrfsDriver.init(opts) };
