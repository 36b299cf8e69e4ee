import { constants } from 'node:fs';
import { open, rmdir, type FileHandle } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { native, LOCK_EX, LOCK_NB, LOCK_UN, MNT_DETACH } from '../native/native.js';
import { notFound, isErrno } from '../errors.js';
import { isMountPoint } from './mount-table.js';

/**
 * Reference counts of one mount, shared by every process on a data-root: `strata mount` in one process
 * and `strata unmount` in another, or a daemon and a CLI, count the same mount. The count lives in a
 * small file next to the mount point and changes only under an flock of that file. The kernel's mount
 * table is the truth when the file disagrees with it (a process crashed between mounting and counting).
 */
export interface MountState {
  count: number;
  mounted: boolean;
}

/**
 * Run `fn` with the mount's state under its lock and store the count it returns. `countFile` sits in
 * the layer's directory: a missing directory, or one removed while we waited, is ErrNotFound.
 */
export async function updateMountRefs(countFile: string, target: string, what: string, fn: (s: MountState) => Promise<number>): Promise<void> {
  let fh: FileHandle;
  try {
    fh = await open(countFile, constants.O_RDWR | constants.O_CREAT, 0o600);
  } catch (e) {
    if (isErrno(e, 'ENOENT')) throw notFound(`${what} does not exist`);
    throw e;
  }
  try {
    await lockPolling(fh.fd);
    try {
      // Removed while we waited for the lock: the file we hold is no longer linked anywhere.
      if ((await fh.stat()).nlink === 0) throw notFound(`${what} does not exist`);
      const { buffer, bytesRead } = await fh.read(Buffer.alloc(32), 0, 32, 0);
      const stored = parseInt(buffer.subarray(0, bytesRead).toString(), 10);
      const mounted = isMountPoint(target);
      const count = mounted && Number.isSafeInteger(stored) && stored > 0 ? stored : 0;
      const next = await fn({ count, mounted });
      await fh.truncate(0);
      await fh.write(String(next), 0);
    } finally {
      native.flock(fh.fd, LOCK_UN);
    }
  } finally {
    await fh.close();
  }
}

// Polling with LOCK_NB: a blocking flock would stall Node's event loop.
async function lockPolling(fd: number): Promise<void> {
  let delay = 1;
  while (!native.flock(fd, LOCK_EX | LOCK_NB)) {
    await sleep(delay);
    delay = Math.min(delay * 2, 50);
  }
}

/** Take one reference; the first one mounts. */
export function acquireMount(countFile: string, target: string, what: string, mount: () => Promise<void>): Promise<void> {
  return updateMountRefs(countFile, target, what, async ({ count, mounted }) => {
    if (!mounted) {
      await mount();
      return 1;
    }
    return count + 1;
  });
}

/** Drop one reference; when none remain, `unmount` runs (told whether it is actually mounted, so it can tidy up either way). */
export function releaseMount(countFile: string, target: string, what: string, unmount: (mounted: boolean) => Promise<void>): Promise<void> {
  return updateMountRefs(countFile, target, what, async ({ count, mounted }) => {
    if (mounted && count > 1) return count - 1;
    await unmount(mounted);
    return 0;
  });
}

/**
 * releaseMount of a kernel mount: the last reference detaches it and removes the mount point, which also
 * ends copies of the mount in other mount namespaces.
 */
export function releaseKernelMount(countFile: string, target: string, what: string): Promise<void> {
  return releaseMount(countFile, target, what, async (mounted) => {
    if (mounted) native.umount(target, MNT_DETACH);
    await rmdir(target).catch((e: unknown) => {
      if (!isErrno(e, 'ENOENT') && !isErrno(e, 'EBUSY')) throw e;
    });
  });
}
