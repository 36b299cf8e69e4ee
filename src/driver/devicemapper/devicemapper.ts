import { constants, existsSync, readFileSync, statSync } from 'node:fs';
import { copyFile, mkdir, readFile, realpath, rm, rmdir, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { ApplyHooks, Change, CreateOpts, Driver, DriverFactory, DriverOptions } from '../driver.js';
import { native } from '../../native/native.js';
import { capability, invalidArgument, isErrno, isStrataError, notFound } from '../../errors.js';
import { writeFileAtomic } from '../../util/atomic.js';
import { execTool } from '../../util/exec.js';
import { humanSize } from '../../util/human-size.js';
import { backingFsName } from '../fs-magic.js';
import { acquireMount, releaseMount, updateMountRefs } from '../mount-refs.js';
import { isMountPoint } from '../mount-table.js';
import { naiveApplyDiff, naiveChanges, naiveDiff, naiveDiffSize } from '../naive-diff.js';
import { parseSize } from '../size-units.js';
import { lastLine, MIN_DATA_SIZE, ThinPool, unmount } from './thin-pool.js';
import { HeldMounts } from '../held-mounts.js';

const FILESYSTEMS = ['xfs', 'ext4'] as const;
type Fs = (typeof FILESYSTEMS)[number];
/** The base device's name: not a valid layer id, so no layer can take it. */
const BASE = '.base';

interface DmOptions {
  dataSize: number;
  metadataSize: number;
  baseSize: number;
  fs: Fs;
  /** Percent of the pool that must stay free for a new device. */
  minFreeSpace: number;
}

/** Docker's defaults (daemon/graphdriver/devmapper/deviceset.go). */
function parseOptions(options: Record<string, string>): DmOptions {
  const out: DmOptions = { dataSize: 100 * 1024 ** 3, metadataSize: 2 * 1024 ** 3, baseSize: 10 * 1024 ** 3, fs: 'xfs', minFreeSpace: 10 };
  for (const [key, value] of Object.entries(options)) {
    switch (key.toLowerCase()) {
      case 'dm.loopdatasize':
        out.dataSize = parseSize(value, 'dm.loopdatasize');
        if (out.dataSize < MIN_DATA_SIZE) throw invalidArgument(`devicemapper: dm.loopdatasize must be at least ${humanSize(MIN_DATA_SIZE)} (the pool is an xfs filesystem)`);
        break;
      case 'dm.loopmetadatasize':
        out.metadataSize = parseSize(value, 'dm.loopmetadatasize');
        if (out.metadataSize < 4096) throw invalidArgument('devicemapper: dm.loopmetadatasize must be at least 4KiB');
        break;
      case 'dm.basesize':
        out.baseSize = parseSize(value, 'dm.basesize');
        break;
      case 'dm.fs':
        if (!(FILESYSTEMS as readonly string[]).includes(value)) throw invalidArgument(`devicemapper: dm.fs must be xfs or ext4, not '${value}'`);
        out.fs = value as Fs;
        break;
      case 'dm.min_free_space': {
        const m = /^(\d{1,2})%$/.exec(value);
        if (m === null) throw invalidArgument(`devicemapper: dm.min_free_space must be a percentage below 100%, not '${value}'`);
        out.minFreeSpace = Number(m[1]);
        break;
      }
      case 'dm.thinpooldev':
      case 'dm.directlvm_device':
        throw invalidArgument(`devicemapper: ${key} is not supported: the kernel device-mapper is absent, strata's thin pool is built on reflinks`);
      default:
        throw invalidArgument(`devicemapper: unknown option ${key}`);
    }
  }
  if (out.fs === 'xfs' && out.baseSize < MIN_DATA_SIZE) throw invalidArgument(`devicemapper: dm.basesize must be at least ${humanSize(MIN_DATA_SIZE)} for dm.fs=xfs`);
  return out;
}

/** What `<home>/metadata/<id>` records for a device (Docker's field names). */
interface DeviceInfo {
  device_id: number;
  size: number;
  initialized: boolean;
  fs: Fs;
}

function checkID(id: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id)) throw invalidArgument(`devicemapper: invalid layer id '${id}'`);
}

/**
 * Docker's devicemapper graphdriver on a thin pool without the kernel's device-mapper (see
 * thin-pool.ts): a base device with the filesystem (dm.fs, dm.basesize) is made once; every layer is
 * a snapshot of its parent's device (or of the base), a FICLONE of the image, and get() mounts the
 * device through a loop device at `<home>/mnt/<id>`. Unlike Docker the filesystem root is the layer
 * root (Docker uses a `rootfs` subdirectory to keep lost+found out; strata removes lost+found from the
 * base device instead), so the view is the mount point itself.
 */
export class DevicemapperDriver implements Driver {
  readonly name = 'devicemapper';
  /** Gets this process holds and has not put, released by cleanup(). */
  private readonly held = new HeldMounts();

  private constructor(
    readonly home: string,
    private readonly opts: DmOptions,
    private readonly pool: ThinPool,
    private readonly base: DeviceInfo,
    /** Docker's `<major>:<minor>-<inode>` of the home directory, in pool and device names. */
    private readonly tag: string,
  ) {}

  static async init(options: DriverOptions): Promise<DevicemapperDriver> {
    const opts = parseOptions(options.options);
    if (process.getuid?.() !== 0) throw capability('devicemapper: not running as root (loop devices and mounts need it)');
    if (!readFileSync('/proc/filesystems', 'utf8').includes('\txfs\n')) throw capability('devicemapper: the kernel has no xfs (the thin pool is an xfs filesystem with reflink)');
    if (!existsSync('/dev/loop-control')) throw capability('devicemapper: no loop devices (/dev/loop-control is missing)');
    await mkdir(options.root, { recursive: true });
    const home = join(await realpath(options.root), 'devicemapper');
    await mkdir(join(home, 'metadata'), { recursive: true, mode: 0o700 });
    await mkdir(join(home, 'mnt'), { recursive: true, mode: 0o700 });
    const pool = new ThinPool(home);
    await pool.ensure(opts.dataSize, opts.metadataSize);
    const st = statSync(home);
    const tag = `${Math.floor(st.dev / 256)}:${st.dev % 256}-${st.ino}`;
    return new DevicemapperDriver(home, opts, pool, await ensureBase(home, pool, opts, options.options), tag);
  }

  private infoPath(id: string): string {
    return join(this.home, 'metadata', id);
  }

  private async info(id: string): Promise<DeviceInfo> {
    checkID(id);
    try {
      return JSON.parse(await readFile(this.infoPath(id), 'utf8')) as DeviceInfo;
    } catch (e) {
      if (isErrno(e, 'ENOENT')) throw notFound(`devicemapper: layer ${id} does not exist`);
      throw e;
    }
  }

  private mnt(id: string): string {
    return join(this.home, 'mnt', id);
  }

  private countFile(id: string): string {
    return join(this.home, 'mnt', `${id}.count`);
  }

  async create(id: string, parent: string | null, opts?: CreateOpts): Promise<void> {
    checkID(id);
    const origin = parent === null ? this.base : await this.info(parent);
    let size = origin.size;
    for (const [key, value] of Object.entries(opts?.storageOpt ?? {})) {
      if (key.toLowerCase() !== 'size') throw invalidArgument(`devicemapper: unknown storage option ${key}`);
      const wanted = parseSize(value, 'size');
      if (wanted < origin.size) throw invalidArgument(`devicemapper: container size ${humanSize(wanted)} cannot be smaller than ${humanSize(origin.size)}`);
      size = wanted;
    }
    if (existsSync(this.infoPath(id))) throw invalidArgument(`devicemapper: layer ${id} already exists`);
    await this.pool.with(async () => {
      this.checkFreeSpace(id);
      const deviceId = await this.pool.allocate({ id, parent: parent ?? BASE });
      const image = this.pool.image(id);
      try {
        await this.noSpace(() => this.snapshot(parent === null ? BASE : parent, image));
        if (size > origin.size) await growDevice(image, size, origin.fs, this.mnt(id));
        const info: DeviceInfo = { device_id: deviceId, size, initialized: true, fs: origin.fs };
        await writeFileAtomic(this.infoPath(id), JSON.stringify(info));
      } catch (e) {
        await rm(image, { force: true });
        await this.pool.free(deviceId);
        throw e;
      }
    });
  }

  createReadWrite(id: string, parent: string | null, opts?: CreateOpts): Promise<void> {
    return this.create(id, parent, opts);
  }

  /** Block-level snapshot: a reflink of the origin's image; a mounted origin is frozen meanwhile, as Docker suspends it. */
  private async snapshot(origin: string, image: string): Promise<void> {
    const src = this.pool.image(origin);
    const mounted = origin !== BASE && isMountPoint(this.mnt(origin));
    if (mounted) await execTool('fsfreeze', ['--freeze', this.mnt(origin)]);
    try {
      await copyFile(src, image, constants.COPYFILE_EXCL | constants.COPYFILE_FICLONE_FORCE);
    } finally {
      if (mounted) await execTool('fsfreeze', ['--unfreeze', this.mnt(origin)]);
    }
  }

  /** Docker's dm.min_free_space: no new device when the pool's free data space is below the minimum. */
  private checkFreeSpace(id: string): void {
    const s = native.statfs(this.pool.mountpoint);
    const min = Math.floor((s.blocks * s.bsize * this.opts.minFreeSpace) / 100);
    if (s.bavail * s.bsize < min) {
      throw capability(`devicemapper: thin pool ${this.pool.dataFile} has ${humanSize(s.bavail * s.bsize)} free data space, less than the minimum ${humanSize(min)} (dm.min_free_space=${this.opts.minFreeSpace}%); cannot create device ${id}`);
    }
  }

  /** A write failing for space: the pool's data space (the loop file's filesystem) or the device's own filesystem. */
  private async noSpace<T>(fn: () => Promise<T>, id?: string): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      if (!isNoSpaceOrIO(e)) throw e;
      const poolFull = await this.pool.with(async () => {
        const s = native.statfs(this.pool.mountpoint);
        return s.bavail * s.bsize < 16 * 1024 ** 2;
      });
      if (poolFull || id === undefined) throw capability(`devicemapper: thin pool ${this.pool.dataFile} is out of data space (ENOSPC)`, e);
      throw capability(`devicemapper: device ${id} is full (ENOSPC): its filesystem is ${humanSize((await this.info(id)).size)} (dm.basesize or --storage-opt size)`, e);
    }
  }

  async remove(id: string): Promise<void> {
    checkID(id);
    if (!existsSync(this.infoPath(id))) return;
    const info = await this.info(id);
    const mnt = this.mnt(id);
    // Unmounted whatever other gets hold: remove is final, as in Docker.
    await updateMountRefs(this.countFile(id), mnt, `devicemapper: layer ${id}`, async ({ mounted }) => {
      if (mounted) {
        unmount(mnt);
        await this.pool.release();
      }
      return 0;
    });
    await this.pool.with(async () => {
      await rm(this.pool.image(id), { force: true });
      await this.pool.free(info.device_id);
    });
    await rm(this.infoPath(id), { force: true });
    await rm(this.countFile(id), { force: true });
    await rmdir(mnt).catch((e: unknown) => {
      if (!isErrno(e, 'ENOENT')) throw e;
    });
    this.held.forget(id);
  }

  async get(id: string): Promise<string> {
    const info = await this.info(id);
    const mnt = this.mnt(id);
    await acquireMount(this.countFile(id), mnt, `devicemapper: layer ${id}`, async () => {
      await this.pool.acquire();
      try {
        await mkdir(mnt, { recursive: true, mode: 0o755 });
        await mountDevice(this.pool.image(id), info.fs, mnt);
      } catch (e) {
        await this.pool.release();
        throw e;
      }
    });
    this.held.add(id);
    return mnt;
  }

  async put(id: string): Promise<void> {
    await this.info(id);
    const mnt = this.mnt(id);
    await releaseMount(this.countFile(id), mnt, `devicemapper: layer ${id}`, async (mounted) => {
      if (!mounted) return;
      unmount(mnt);
      await this.pool.release();
    });
    this.held.release(id);
  }

  async exists(id: string): Promise<boolean> {
    checkID(id);
    return existsSync(this.infoPath(id));
  }

  async status(): Promise<Array<[string, string]>> {
    return this.pool.with(async (mountpoint) => {
      const s = native.statfs(mountpoint);
      const total = s.blocks * s.bsize;
      const meta = await this.pool.metadataUsage();
      return [
        ['Pool Name', `strata-${this.tag}-pool`],
        ['Pool Blocksize', humanSize(s.bsize)],
        ['Base Device Size', humanSize(this.base.size)],
        ['Backing Filesystem', this.base.fs],
        ['Udev Sync Supported', 'false'],
        ['Data file', this.pool.loopDevice() ?? ''],
        ['Metadata file', this.pool.metadataFile],
        ['Data loop file', this.pool.dataFile],
        ['Data Space Used', humanSize((s.blocks - s.bfree) * s.bsize)],
        ['Data Space Total', humanSize(total)],
        ['Data Space Available', humanSize(s.bavail * s.bsize)],
        ['Metadata Space Used', humanSize(meta.used)],
        ['Metadata Space Total', humanSize(meta.total)],
        ['Metadata Space Available', humanSize(meta.total - meta.used)],
        ['Thin Pool Minimum Free Space', humanSize(Math.floor((total * this.opts.minFreeSpace) / 100))],
        ['Deferred Removal Enabled', 'false'],
        ['Deferred Deletion Enabled', 'false'],
        ['Deferred Deleted Device Count', '0'],
        ['Library Version', 'strata reflink-loop'],
        ['Mechanism', `reflink clones of loop-mounted sparse images on xfs (kernel device-mapper absent); pool on ${backingFsName(this.home)}`],
      ];
    });
  }

  async metadata(id: string): Promise<Record<string, string>> {
    const info = await this.info(id);
    return { DeviceId: String(info.device_id), DeviceName: `strata-${this.tag}-${id}`, DeviceSize: String(info.size) };
  }

  diff(id: string, parent: string | null): Promise<Readable> {
    return naiveDiff(this, id, parent);
  }

  changes(id: string, parent: string | null): Promise<Change[]> {
    return naiveChanges(this, id, parent);
  }

  /** Applied, then synced: a pool out of space shows as write errors of the loop device, which syncfs reports. */
  applyDiff(id: string, _parent: string | null, tar: Readable, hooks?: ApplyHooks): Promise<number> {
    return this.noSpace(async () => {
      const root = await this.get(id);
      try {
        const size = await naiveApplyDiff(this, id, tar, hooks);
        await execTool('sync', ['--file-system', root]);
        return size;
      } finally {
        await this.put(id);
      }
    }, id);
  }

  diffSize(id: string, parent: string | null): Promise<number> {
    return naiveDiffSize(this, id, parent);
  }

  async cleanup(): Promise<void> {
    await this.held.releaseAll((id) => this.put(id));
  }
}

function isNoSpaceOrIO(e: unknown): boolean {
  for (let c: unknown = e; c instanceof Error; c = c.cause) {
    if (isErrno(c, 'ENOSPC') || isErrno(c, 'EIO') || /No space left on device|Input\/output error|ENOSPC/.test(c.message)) return true;
  }
  return false;
}

async function mountDevice(image: string, fs: Fs, target: string): Promise<void> {
  // Snapshots share their origin's filesystem UUID, which xfs refuses twice without nouuid (Docker mounts so too).
  const options = fs === 'xfs' ? 'loop,nouuid' : 'loop';
  try {
    await execTool('mount', ['-t', fs, '-o', options, image, target]);
  } catch (e) {
    if (isStrataError(e, 'ErrCapability')) throw e;
    throw capability(`devicemapper: cannot mount device ${image}: ${lastLine(e)}`, e);
  }
}

/** A device grown to `size` (Docker's --storage-opt size above the base size): the image, then its filesystem. */
async function growDevice(image: string, size: number, fs: Fs, mnt: string): Promise<void> {
  await truncate(image, size);
  if (fs === 'ext4') {
    await execTool('e2fsck', ['-f', '-y', '-p', image]).catch(() => undefined);
    await execTool('resize2fs', ['-f', image]);
    return;
  }
  await mkdir(mnt, { recursive: true, mode: 0o755 });
  await mountDevice(image, fs, mnt);
  try {
    await execTool('xfs_growfs', [mnt]);
  } finally {
    unmount(mnt);
    await rmdir(mnt);
  }
}

/** The base device: made once, formatted with dm.fs, its root the empty 0755 root of every base layer. */
async function ensureBase(home: string, pool: ThinPool, opts: DmOptions, given: Record<string, string>): Promise<DeviceInfo> {
  const path = join(home, 'metadata', BASE);
  if (!existsSync(path)) {
    await pool.with(async () => {
      if (existsSync(path)) return;
      const image = pool.image(BASE);
      await writeFile(image, '', { mode: 0o600 });
      await truncate(image, opts.baseSize);
      const mkfs =
        opts.fs === 'ext4'
          ? ['mkfs.ext4', ['-q', '-F', '-E', 'nodiscard,lazy_itable_init=0,lazy_journal_init=0', image]]
          : ['mkfs.xfs', ['-q', '-f', '-K', image]];
      try {
        await execTool(mkfs[0] as string, mkfs[1] as string[]);
      } catch (e) {
        if (isStrataError(e, 'ErrCapability')) throw capability(`devicemapper: ${mkfs[0] as string} is not installed (needed for dm.fs=${opts.fs})`, e);
        throw capability(`devicemapper: cannot format the base device: ${lastLine(e)}`, e);
      }
      const mnt = join(home, 'mnt', BASE);
      await mkdir(mnt, { recursive: true });
      await mountDevice(image, opts.fs, mnt);
      try {
        await rm(join(mnt, 'lost+found'), { recursive: true, force: true });
      } finally {
        unmount(mnt);
        await rmdir(mnt);
      }
      const deviceId = await pool.allocate({ id: BASE });
      const info: DeviceInfo = { device_id: deviceId, size: opts.baseSize, initialized: true, fs: opts.fs };
      await writeFileAtomic(path, JSON.stringify(info));
    });
  }
  const base = JSON.parse(await readFile(path, 'utf8')) as DeviceInfo;
  const fsGiven = 'dm.fs' in given && opts.fs !== base.fs;
  if (fsGiven || ('dm.basesize' in given && opts.baseSize !== base.size)) {
    throw invalidArgument(`devicemapper: the base device has dm.fs=${base.fs} and dm.basesize=${humanSize(base.size)}; changing them on an existing pool is not supported`);
  }
  return base;
}

export const devicemapper: DriverFactory = { name: 'devicemapper', init: (opts) => DevicemapperDriver.init(opts) };
