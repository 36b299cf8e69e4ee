import { existsSync, readFileSync } from 'node:fs';
import { mkdir, realpath, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ApplyHooks, Change, CreateOpts, Driver, DriverFactory, DriverOptions } from '../driver.js';
import { capability, inUse, invalidArgument, isErrno, isStrataError, notFound } from '../../errors.js';
import { execTool } from '../../util/exec.js';
import { acquireMount, releaseMount } from '../mount-refs.js';
import { isMountPoint } from '../mount-table.js';
import { naiveApplyDiff, naiveChanges, naiveDiff, naiveDiffSize } from '../naive-diff.js';
import { HeldMounts } from '../held-mounts.js';

const lastLine = (e: unknown) => (e as Error).message.trim().split('\n').at(-1)!;

function checkID(id: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id)) throw invalidArgument(`zfs: invalid layer id '${id}'`);
}

const zfs = (args: string[]) => execTool('zfs', args);

/** Whether a dataset exists (`zfs list` fails with "dataset does not exist" otherwise). */
async function datasetExists(name: string): Promise<boolean> {
  try {
    await zfs(['list', '-H', '-o', 'name', name]);
    return true;
  } catch (e) {
    if (isStrataError(e, 'ErrInternal') && /does not exist/.test(e.message)) return false;
    throw e;
  }
}

/** The dataset a data-root lives on when it is on zfs (kernel zfs or zfs-fuse): the source of the mount holding it. */
function rootDataset(root: string): string | null {
  let best: { mountPoint: string; fstype: string; source: string } | undefined;
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ');
    if (post === undefined) continue;
    const mountPoint = pre!.split(' ')[4]!.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)));
    const [fstype, source] = post.split(' ');
    const covers = mountPoint === '/' || root === mountPoint || root.startsWith(mountPoint + '/');
    if (covers && (best === undefined || mountPoint.length >= best.mountPoint.length)) best = { mountPoint, fstype: fstype!, source: source! };
  }
  return best !== undefined && (best.fstype === 'zfs' || best.fstype === 'fuse.zfs') ? best.source : null;
}

/**
 * A zfs command retried while zfs-fuse still reports the dataset busy: its unmount returns before the
 * daemon has let go of the dataset, so a mount or destroy right after an unmount can race it.
 */
async function zfsUnlessBusy(args: string[]): Promise<void> {
  for (let delay = 5; ; delay *= 2) {
    try {
      await zfs(args);
      return;
    } catch (e) {
      if (delay > 1000 || !/dataset is busy/.test((e as Error).message)) throw e;
      await sleep(delay);
    }
  }
}

/**
 * Docker's zfs graphdriver, through the `zfs`/`zpool` commands (Debian's zfs-fuse here): every layer
 * is a dataset `<zfs.fsname>/<id>`, a child a clone of a snapshot of its parent (the snapshot is
 * destroyed at once with deferred deletion, so it disappears with the last clone), removal a
 * `zfs destroy -r`. Docker mounts datasets with `mountpoint=legacy` and mount(2); zfs-fuse has no
 * mount(2) entry point (no `mount -t zfs`), so each dataset carries `mountpoint=<home>/graph/<id>` with
 * `canmount=noauto` and get/put run `zfs mount`/`zfs umount`, reference counted across processes.
 * zfs-fuse supports no extended attributes at all (ENOTSUP): layers applied on it lose their xattrs.
 */
export class ZfsDriver implements Driver {
  readonly name = 'zfs';
  /** Gets this process holds and has not put, released by cleanup(). */
  private readonly held = new HeldMounts();

  private constructor(
    readonly home: string,
    private readonly fsname: string,
  ) {}

  static async init(options: DriverOptions): Promise<ZfsDriver> {
    let fsname: string | undefined;
    for (const [key, value] of Object.entries(options.options)) {
      switch (key.toLowerCase()) {
        case 'zfs.fsname':
          if (!/^[A-Za-z0-9][A-Za-z0-9_.:/-]*$/.test(value) || value.endsWith('/')) throw invalidArgument(`zfs: invalid zfs.fsname '${value}'`);
          fsname = value;
          break;
        case 'size':
        case 'zfs.size':
          throw invalidArgument(`zfs: ${key} is not supported: strata does not set zfs quotas`);
        default:
          throw invalidArgument(`zfs: unknown option ${key}`);
      }
    }
    if (process.getuid?.() !== 0) throw capability('zfs: not running as root (datasets and mounts need it)');
    await mkdir(options.root, { recursive: true });
    const root = await realpath(options.root);
    fsname ??= rootDataset(root) ?? undefined;
    if (fsname === undefined) throw capability(`zfs: ${root} is not on zfs (give zfs.fsname=POOL/DATASET)`);
    try {
      if (!(await datasetExists(fsname))) throw capability(`zfs: the dataset ${fsname} (zfs.fsname) does not exist`);
    } catch (e) {
      if (isStrataError(e, 'ErrCapability')) {
        throw /not installed/.test(e.message) ? capability('zfs: the zfs command is not installed (zfs-fuse or zfsutils)', e) : e;
      }
      // zfs-fuse's commands talk to its daemon through a socket.
      throw capability(`zfs: cannot use the zfs commands: ${lastLine(e)}`, e);
    }
    const home = join(root, 'zfs');
    await mkdir(join(home, 'graph'), { recursive: true, mode: 0o700 });
    await mkdir(join(home, 'layers'), { recursive: true, mode: 0o700 });
    return new ZfsDriver(home, fsname);
  }

  private dataset(id: string): string {
    checkID(id);
    return `${this.fsname}/${id}`;
  }

  private mountpoint(id: string): string {
    return join(this.home, 'graph', id);
  }

  /** `<home>/layers/<id>`: the record that the layer is complete, holding its mount count. */
  private record(id: string): string {
    checkID(id);
    return join(this.home, 'layers', id);
  }

  private mustExist(id: string): void {
    if (!existsSync(this.record(id))) throw notFound(`zfs: layer ${id} does not exist`);
  }

  async create(id: string, parent: string | null, opts?: CreateOpts): Promise<void> {
    for (const key of Object.keys(opts?.storageOpt ?? {})) {
      if (key === 'size') throw invalidArgument('zfs: --storage-opt size is not supported: strata does not set zfs quotas');
      throw invalidArgument(`zfs: unknown storage option ${key}`);
    }
    const name = this.dataset(id);
    if (existsSync(this.record(id))) throw invalidArgument(`zfs: layer ${id} already exists`);
    if (parent !== null) this.mustExist(parent);
    // A dataset without a record is what an interrupted create leaves.
    if (await datasetExists(name)) await zfsUnlessBusy(['destroy', '-r', name]);
    const props = ['-o', 'canmount=noauto', '-o', `mountpoint=${this.mountpoint(id)}`];
    await this.noSpace(async () => {
      if (parent === null) {
        await zfs(['create', ...props, name]);
      } else {
        const snapshot = `${this.dataset(parent)}@${id}`;
        await zfs(['snapshot', snapshot]);
        try {
          await zfs(['clone', ...props, snapshot, name]);
        } finally {
          // Deferred: the snapshot goes away with its last clone.
          await zfs(['destroy', '-d', snapshot]);
        }
      }
    });
    await mkdir(this.record(id), { mode: 0o700 });
  }

  createReadWrite(id: string, parent: string | null, opts?: CreateOpts): Promise<void> {
    return this.create(id, parent, opts);
  }

  private async noSpace<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (e) {
      for (let c: unknown = e; c instanceof Error; c = c.cause) {
        if (isErrno(c, 'ENOSPC') || /out of space|No space left on device/i.test(c.message)) {
          throw capability(`zfs: the dataset ${this.fsname} is full (no space left on device)`, e);
        }
      }
      throw e;
    }
  }

  async remove(id: string): Promise<void> {
    const name = this.dataset(id);
    const mnt = this.mountpoint(id);
    if (isMountPoint(mnt)) await zfs(['umount', '-f', name]);
    if (await datasetExists(name)) {
      try {
        await zfsUnlessBusy(['destroy', '-r', name]);
      } catch (e) {
        if (/dependent clones/.test((e as Error).message)) throw inUse(`zfs: layer ${id} has child layers; remove them first`);
        throw e;
      }
    }
    await rm(this.record(id), { recursive: true, force: true });
    await rmdir(mnt).catch((e: unknown) => {
      if (!isErrno(e, 'ENOENT')) throw e;
    });
    this.held.forget(id);
  }

  async get(id: string): Promise<string> {
    this.mustExist(id);
    const mnt = this.mountpoint(id);
    await acquireMount(join(this.record(id), 'mount-count'), mnt, `zfs: layer ${id}`, async () => {
      await mkdir(mnt, { recursive: true, mode: 0o755 });
      await zfsUnlessBusy(['mount', this.dataset(id)]);
    });
    this.held.add(id);
    return mnt;
  }

  async put(id: string): Promise<void> {
    this.mustExist(id);
    const mnt = this.mountpoint(id);
    await releaseMount(join(this.record(id), 'mount-count'), mnt, `zfs: layer ${id}`, async (mounted) => {
      if (mounted) await zfs(['umount', this.dataset(id)]);
      await rmdir(mnt).catch((e: unknown) => {
        if (!isErrno(e, 'ENOENT') && !isErrno(e, 'EBUSY')) throw e;
      });
    });
    this.held.release(id);
  }

  async exists(id: string): Promise<boolean> {
    return existsSync(this.record(id));
  }

  async status(): Promise<Array<[string, string]>> {
    const pool = this.fsname.split('/')[0]!;
    const [used, avail, quota, compression, checksum] = (await zfs(['get', '-Hp', '-o', 'value', 'used,available,quota,compression,checksum', this.fsname])).stdout.trim().split('\n');
    const health = (await execTool('zpool', ['list', '-H', '-o', 'health', pool])).stdout.trim();
    return [
      ['Zpool', pool],
      ['Zpool Health', health],
      ['Parent Dataset', this.fsname],
      ['Space Used By Parent', used ?? ''],
      ['Space Available', avail ?? ''],
      ['Parent Quota', quota === '0' || quota === 'none' ? 'no' : (quota ?? '')],
      ['Compression', compression ?? ''],
      ['Checksum', checksum ?? ''],
    ];
  }

  async metadata(id: string): Promise<Record<string, string>> {
    this.mustExist(id);
    return { Dataset: this.dataset(id), Mountpoint: this.mountpoint(id) };
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

  async cleanup(): Promise<void> {
    await this.held.releaseAll((id) => this.put(id));
  }
}

export const zfsDriver: DriverFactory = { name: 'zfs', init: (opts) => ZfsDriver.init(opts) };
