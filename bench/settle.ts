import { writeFileSync } from 'node:fs';
import { runOk } from '../test/fixtures/run.js';

/**
 * Bring the machine to the same state before every timed run, whichever side ran before.
 *
 * `sync`: what the previous run wrote is written back, so an fsync in this run does not wait for it.
 * Dropping the page, dentry and inode caches (root only): ext4 without a journal (this machine's root
 * filesystem) will not reuse an inode freed in the last 60 s (360 s while its inode-table block is dirty) as
 * long as that block is cached, and it finds out by scanning every such inode for each new file. A run right
 * after another side's cleanup (thousands of files deleted) then paid several times the normal cost per file
 * created (measured: 0.16 ms for two mkdirs and a symlink, 0.4-1.1 ms after deletions, 0.16 ms again after the
 * drop). Inputs are read back cold afterwards; on this disk that is ~1 GB/s, the same for both sides.
 */
export async function settle(): Promise<void> {
  await runOk('sync', []);
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
  } catch {
    // Not root: the runs keep the order effect described above.
  }
}
