import { rm } from 'node:fs/promises';
import { native, MNT_DETACH } from '../native/native.js';
import { isErrno } from '../errors.js';
import { mountsUnder } from './mount-table.js';

/**
 * Remove a driver directory even when something is still mounted inside it (a crashed process's
 * mount): detach those mounts first, then delete, retrying while the kernel still reports it busy.
 */
export async function ensureRemoveAll(dir: string): Promise<void> {
  for (const m of mountsUnder(dir)) {
    try {
      native.umount(m, MNT_DETACH);
    } catch (e) {
      if (!isErrno(e, 'EINVAL') && !isErrno(e, 'ENOENT')) throw e;
    }
  }
  await rm(dir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
}
