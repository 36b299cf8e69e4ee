import { existsSync } from 'node:fs';
import { mkdir, realpath, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { DriverFactory, DriverOptions } from '../driver.js';
import { native, MNT_DETACH } from '../../native/native.js';
import { capability, invalidArgument, isStrataError } from '../../errors.js';
import { execTool } from '../../util/exec.js';
import { backingFsName } from '../fs-magic.js';
import { createLayoutHome, Overlay2Driver, type OverlayMounter } from '../overlay2/overlay2.js';
import { withScratch } from '../overlay2/overlay-support.js';

const PROGRAM = 'fuse-overlayfs';
// Options travel as one argv string: the kernel's limit for a single argument (MAX_ARG_STRLEN) is 32 pages.
const MAX_ARG = 32 * 4096 - 1;

/** Mounts by running the fuse-overlayfs program (also how the aufs driver mounts its layers for processes). */
export const fuseMounter: OverlayMounter = {
  maxOptions: MAX_ARG,
  // The program returns once the mount is up, leaving a daemon that serves it until it is unmounted.
  mount: async (target, options, cwd) => {
    await execTool(PROGRAM, ['-o', options, target], { cwd });
  },
};

/** A real fuse-overlayfs mount with two lowers; returns why it failed, or null. */
async function fuseMountProblem(dir: string): Promise<string | null> {
  return withScratch(dir, 'check-fuse-overlayfs-support', ['lower1', 'lower2', 'upper', 'work', 'merged'], async (td) => {
    await writeFile(join(td, 'lower1', 'f'), '');
    const merged = join(td, 'merged');
    try {
      await fuseMounter.mount(merged, `lowerdir=${td}/lower2:${td}/lower1,upperdir=${td}/upper,workdir=${td}/work`);
    } catch (e) {
      return `test mount failed: ${(e as Error).message}`;
    }
    try {
      return existsSync(join(merged, 'f')) ? null : 'test mount does not show its lower layer';
    } finally {
      native.umount(merged, MNT_DETACH);
    }
  });
}

/**
 * Docker's fuse-overlayfs graphdriver: overlay2's layout (`<home>/<id>/{diff,link,lower,work,merged}`,
 * `l/` short links, char 0/0 whiteouts, `trusted.overlay.opaque`) mounted by the fuse-overlayfs program
 * instead of the kernel, for machines without a usable kernel overlayfs. Layer tars are applied
 * straight into diff/; diffs are read through the mounted views, because fuse-overlayfs keeps markers
 * of its own in the upper directory (a `.wh..wh..opq` file and a `.wh..opq` whiteout in opaque
 * directories) that an export of diff/ would carry into the tar. Needs root (whiteouts are device
 * nodes and trusted.* xattrs) and /dev/fuse.
 */
async function init(opts: DriverOptions): Promise<Overlay2Driver> {
  for (const key of Object.keys(opts.options)) throw invalidArgument(`fuse-overlayfs: unknown option ${key}`);
  const unusable = (reason: string) => capability(`fuse-overlayfs: not usable here: ${reason}`);
  if (process.getuid?.() !== 0) throw unusable('not running as root (whiteouts are device nodes and trusted.* xattrs)');
  if (!existsSync('/dev/fuse')) throw unusable('/dev/fuse is missing');
  try {
    await execTool(PROGRAM, ['--version']);
  } catch (e) {
    if (isStrataError(e, 'ErrCapability')) throw unusable(`${PROGRAM} is not installed`);
    throw e;
  }
  await mkdir(opts.root, { recursive: true });
  const home = join(await realpath(opts.root), 'fuse-overlayfs');
  // Probe in the data-root when home does not exist yet, so a failed init leaves no state behind.
  const probeDir = existsSync(home) ? home : dirname(home);
  const problem = await fuseMountProblem(probeDir);
  if (problem !== null) throw unusable(problem);
  await createLayoutHome(home);
  const features = {
    nativeDiffProblem: `${PROGRAM} keeps its own opaque-directory markers in the upper directory`,
    status: [['Backing Filesystem', backingFsName(home)]] as Array<[string, string]>,
  };
  return new Overlay2Driver('fuse-overlayfs', home, features, fuseMounter);
}

export const fuseOverlayfs: DriverFactory = { name: 'fuse-overlayfs', init };
