import * as fs from 'node:fs';
import { native } from '../../../src/native/native.js';
import { kernelOp } from './kernel-ops.js';
import { manifest } from './manifest.js';
import type { Op } from './sequence.js';

/**
 * The kernel side of the differential test, a child process chrooted into the overlay mount, so that
 * `..` and absolute symlinks stop at the mount's root as they do at the union's (and as they do for a
 * container). Its cwd stays in the test's directory, outside the root: `enter` takes a mount point
 * relative to it, `leave` goes back to it, so one worker serves every sequence.
 */
export type WorkerRequest = { t: 'enter'; root: string } | { t: 'leave' } | { t: 'op'; op: Op } | { t: 'manifest' };

const kernelFs = {
  readdir: (p: string) => fs.readdirSync(p),
  lstat: (p: string) => fs.lstatSync(p),
  readFile: (p: string) => fs.readFileSync(p),
  readlink: (p: string) => fs.readlinkSync(p),
};

async function handle(m: WorkerRequest): Promise<unknown> {
  switch (m.t) {
    case 'enter':
      return native.chroot(m.root);
    case 'leave':
      return native.chroot('.');
    case 'manifest':
      // Overlayfs lists a lower directory that merges with nothing as it is on disk, whiteouts
      // included, though looking one up finds nothing: those names are not part of the tree.
      return manifest(kernelFs, { skipListedAbsent: true });
    case 'op':
      try {
        kernelOp(m.op);
        return 'OK';
      } catch (e) {
        const code = (e as { code?: unknown }).code;
        if (typeof code !== 'string') throw e;
        return code;
      }
  }
}

// The parent gone (even killed): nothing left to serve.
process.on('disconnect', () => process.exit(0));
process.on('message', (m: WorkerRequest) => {
  handle(m).then(
    (value) => process.send!({ value }),
    (e: unknown) => process.send!({ error: String((e as Error)?.stack ?? e) }),
  );
});
