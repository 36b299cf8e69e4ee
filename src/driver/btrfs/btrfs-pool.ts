import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { open, readFile, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { native } from '../../native/native.js';
import { withFdLock } from '../../util/lock.js';
import { capability, conflict, isErrno, isStrataError } from '../../errors.js';
import { writeFileAtomic } from '../../util/atomic.js';
import { execTool } from '../../util/exec.js';
import { isMountPoint } from '../mount-table.js';

/**
 * A btrfs filesystem in a file, loop-mounted on the driver's home, for data-roots that are not on btrfs.
 *
 * Lifecycle: the first init creates the file (sparse, `btrfs.pool_size`) and formats it, records the
 * pool in `<home>/.strata-pool.json` on the directory underneath the mount point, and mounts it with
 * `mount -o loop` (the loop device is freed when the filesystem is unmounted). The mount then belongs
 * to the data-root, not to a process: strata never unmounts it, since another strata process (a
 * daemon, a CLI) may be using layers in it at any moment. Each later init finds it mounted, or, after
 * a reboot, mounts it again from the record, so `btrfs.pool` is needed only once. To release the pool,
 * stop every strata process on the data-root and `umount <data-root>/btrfs`.
 */
export interface Pool {
  file: string;
  /** The loop device the pool is mounted through. */
  device: string;
}

const RECORD = '.strata-pool.json';
/** What a pool file is created with when `btrfs.pool_size` is not given. */
export const DEFAULT_POOL_SIZE = 10 * 1024 ** 3;

/** Space mkfs.btrfs writes into a new pool (superblocks, DUP metadata and system chunks), with margin. */
const MKFS_NEEDS = 64 * 1024 ** 2;

const lastLine = (e: unknown) => (e as Error).message.trim().split('\n').at(-1)!;

/** Whether an error (or one it wraps) is the kernel running out of space. */
export function isNoSpace(e: unknown): boolean {
  for (let c: unknown = e; c instanceof Error; c = c.cause) {
    if (isErrno(c, 'ENOSPC') || /No space left on device|ENOSPC/.test(c.message)) return true;
  }
  return false;
}

/** The loop device mounted at `home` and the file behind it, or null when home is not loop-mounted. */
async function mountedPool(home: string): Promise<Pool | null> {
  const { stdout } = await execTool('findmnt', ['-n', '-o', 'SOURCE', '--mountpoint', home]);
  const device = stdout.trim();
  if (!/^\/dev\/loop\d+$/.test(device)) return null;
  const file = readFileSync(`/sys/block/${basename(device)}/loop/backing_file`, 'utf8').trim();
  return { file, device };
}

/** Serialise pool set-up between processes: a lock on home's own inode, taken before anything is mounted on it. */
async function withHomeLock<T>(home: string, fn: () => Promise<T>): Promise<T> {
  const fd = openSync(home, 'r');
  try {
    return await withFdLock(fd, fn);
  } finally {
    closeSync(fd);
  }
}

async function createPoolFile(file: string, size: number): Promise<void> {
  const fh = await open(file, 'wx', 0o600);
  try {
    await fh.truncate(size);
  } finally {
    await fh.close();
  }
  try {
    await execTool('mkfs.btrfs', ['-q', file]);
  } catch (e) {
    await rm(file, { force: true });
    // mkfs writes into a sparse file: a full disk shows as ENOSPC or, through its zeroing, as EIO.
    const s = native.statfs(dirname(file));
    const free = s.bavail * s.bsize;
    if (isNoSpace(e) || free < MKFS_NEEDS) throw capability(`btrfs: cannot create pool ${file}: no space left on device (${free} bytes free)`, e);
    throw capability(`btrfs: cannot create pool ${file}: ${lastLine(e)}`, e);
  }
}

/**
 * Make sure `home` has the pool mounted when one is asked for (`file`) or recorded; returns it, or
 * null when there is none (home must then be on btrfs itself).
 */
export async function ensurePool(home: string, file: string | undefined, size: number | undefined): Promise<Pool | null> {
  return withHomeLock(home, async () => {
    if (isMountPoint(home)) {
      const pool = await mountedPool(home);
      if (file !== undefined && pool?.file !== file) {
        throw conflict(`btrfs: ${home} is already mounted from ${pool?.file ?? 'something else'}, not from the pool ${file}`);
      }
      return pool;
    }
    const recordPath = join(home, RECORD);
    const recorded = existsSync(recordPath) ? (JSON.parse(await readFile(recordPath, 'utf8')) as { file: string }).file : undefined;
    const poolFile = file ?? recorded;
    if (poolFile === undefined) return null;
    if (file === undefined && !existsSync(poolFile)) throw capability(`btrfs: the pool file ${poolFile} recorded for ${home} is missing`);
    // Never format a file that exists: it may hold a pool (or anything else) we must not destroy.
    if (!existsSync(poolFile)) await createPoolFile(poolFile, size ?? DEFAULT_POOL_SIZE);
    if (poolFile !== recorded) await writeFileAtomic(recordPath, JSON.stringify({ file: poolFile }));
    try {
      await execTool('mount', ['-t', 'btrfs', '-o', 'loop', poolFile, home]);
    } catch (e) {
      if (isStrataError(e, 'ErrCapability')) throw e;
      throw capability(`btrfs: cannot mount pool ${poolFile}: ${lastLine(e)}`, e);
    }
    return mountedPool(home);
  });
}
