import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, open, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { native, LOCK_EX, LOCK_NB, LOCK_UN, MNT_DETACH } from '../../native/native.js';
import { capability, internal, isErrno, isStrataError } from '../../errors.js';
import { execTool } from '../../util/exec.js';
import { acquireMount, releaseMount } from '../mount-refs.js';

/**
 * The thin pool, built without the kernel's device-mapper: the data "device" is an xfs filesystem
 * with reflink in a sparse file (`<home>/devicemapper/data`, dm.loopdatasize), loop-mounted on
 * `<home>/pool` while any device is in use; thin devices are sparse image files in it, and a snapshot
 * is a FICLONE of its origin's image, so blocks are shared until written and allocated only then.
 * The metadata "device" (`<home>/devicemapper/metadata`, dm.loopmetadatasize) holds one 4 KiB record
 * per device id; a removed device's record is punched out, so its allocated blocks are the metadata
 * space used.
 *
 * Activation is reference counted across processes (mount-refs): every operation on images and every
 * mounted device holds the pool, and the last release unmounts it (freeing its loop device), so an
 * idle data-root has nothing mounted.
 */
export const RECORD_SIZE = 4096;
/** mkfs.xfs refuses smaller filesystems. */
export const MIN_DATA_SIZE = 300 * 1024 ** 2;

export class ThinPool {
  readonly dataFile: string;
  readonly metadataFile: string;
  readonly mountpoint: string;
  private readonly refs: string;

  constructor(home: string) {
    this.dataFile = join(home, 'devicemapper', 'data');
    this.metadataFile = join(home, 'devicemapper', 'metadata');
    this.mountpoint = join(home, 'pool');
    this.refs = join(home, 'pool-refs');
  }

  /** Create and format the pool files when they do not exist yet (never formats an existing file). */
  async ensure(dataSize: number, metadataSize: number): Promise<void> {
    await mkdir(join(this.dataFile, '..'), { recursive: true, mode: 0o700 });
    await mkdir(this.mountpoint, { recursive: true, mode: 0o700 });
    if (!existsSync(this.metadataFile)) await sparseFile(this.metadataFile, metadataSize);
    if (existsSync(this.dataFile)) return;
    const tmp = `${this.dataFile}.tmp`;
    await rm(tmp, { force: true });
    await sparseFile(tmp, dataSize);
    try {
      await execTool('mkfs.xfs', ['-q', '-m', 'reflink=1', tmp]);
    } catch (e) {
      await rm(tmp, { force: true });
      if (isStrataError(e, 'ErrCapability')) throw capability('devicemapper: mkfs.xfs is not installed (xfsprogs)', e);
      throw capability(`devicemapper: cannot format the pool data file ${this.dataFile}: ${lastLine(e)}`, e);
    }
    await execTool('mv', ['-n', tmp, this.dataFile]);
  }

  /** Run fn with the pool active (its filesystem mounted at `mountpoint`). */
  async with<T>(fn: (pool: string) => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await fn(this.mountpoint);
    } finally {
      await this.release();
    }
  }

  acquire(): Promise<void> {
    return acquireMount(this.refs, this.mountpoint, 'devicemapper: thin pool', async () => {
      try {
        await execTool('mount', ['-t', 'xfs', '-o', 'loop', this.dataFile, this.mountpoint]);
      } catch (e) {
        throw capability(`devicemapper: cannot activate the thin pool ${this.dataFile}: ${lastLine(e)}`, e);
      }
      await mkdir(join(this.mountpoint, 'devices'), { recursive: true, mode: 0o700 });
    });
  }

  release(): Promise<void> {
    return releaseMount(this.refs, this.mountpoint, 'devicemapper: thin pool', async (mounted) => {
      if (mounted) unmount(this.mountpoint);
    });
  }

  image(name: string): string {
    return join(this.mountpoint, 'devices', `${name}.img`);
  }

  /** The loop device of the active pool, or null. */
  loopDevice(): string | null {
    for (const dev of readdirSafe('/sys/block')) {
      if (!dev.startsWith('loop')) continue;
      try {
        if (readFileSync(`/sys/block/${dev}/loop/backing_file`, 'utf8').trim() === this.dataFile) return `/dev/${dev}`;
      } catch {
        // not bound
      }
    }
    return null;
  }

  /** Take the lowest free device id and store its record; fails when the metadata file is full. */
  async allocate(record: object): Promise<number> {
    return this.withMetadata(async (fh, size) => {
      const chunk = Buffer.alloc(1024 * 1024);
      for (let off = 0; off < size; off += chunk.length) {
        const { bytesRead } = await fh.read(chunk, 0, chunk.length, off);
        for (let i = 0; i + RECORD_SIZE <= bytesRead; i += RECORD_SIZE) {
          if (chunk[i] !== 0) continue;
          const id = (off + i) / RECORD_SIZE;
          const bytes = Buffer.alloc(RECORD_SIZE);
          const json = Buffer.from(JSON.stringify({ ...record, device_id: id }));
          if (json.length >= RECORD_SIZE) throw internal('devicemapper: device record too large');
          json.copy(bytes);
          await fh.write(bytes, 0, RECORD_SIZE, off + i);
          await fh.datasync();
          return id;
        }
      }
      throw capability(`devicemapper: thin pool metadata is full (ENOSPC): ${size / RECORD_SIZE} device records in ${this.metadataFile} (dm.loopmetadatasize)`);
    });
  }

  /** Drop a device id's record and give its blocks back. */
  async free(id: number): Promise<void> {
    await this.withMetadata(async (fh) => {
      await fh.write(Buffer.alloc(RECORD_SIZE), 0, RECORD_SIZE, id * RECORD_SIZE);
      await fh.datasync();
    });
    await execTool('fallocate', ['--punch-hole', '--keep-size', '--offset', String(id * RECORD_SIZE), '--length', String(RECORD_SIZE), this.metadataFile]);
  }

  async metadataUsage(): Promise<{ used: number; total: number }> {
    const st = await stat(this.metadataFile);
    return { used: st.blocks * 512, total: st.size };
  }

  private async withMetadata<T>(fn: (fh: Awaited<ReturnType<typeof open>>, size: number) => Promise<T>): Promise<T> {
    const fh = await open(this.metadataFile, 'r+');
    try {
      let delay = 1;
      while (!native.flock(fh.fd, LOCK_EX | LOCK_NB)) {
        await sleep(delay);
        delay = Math.min(delay * 2, 50);
      }
      try {
        return await fn(fh, (await fh.stat()).size);
      } finally {
        native.flock(fh.fd, LOCK_UN);
      }
    } finally {
      await fh.close();
    }
  }
}

/** Unmount a loop-backed filesystem so its (autoclear) loop device is freed now; detach only when busy. */
export function unmount(target: string): void {
  try {
    native.umount(target, 0);
  } catch (e) {
    if (isErrno(e, 'EINVAL') || isErrno(e, 'ENOENT')) return;
    if (!isErrno(e, 'EBUSY')) throw e;
    native.umount(target, MNT_DETACH);
  }
}

export const lastLine = (e: unknown) => (e as Error).message.trim().split('\n').at(-1)!;

async function sparseFile(path: string, size: number): Promise<void> {
  const fh = await open(path, 'wx', 0o600);
  try {
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
