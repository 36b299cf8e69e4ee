import { mkdtemp, mkdir, rm, writeFile, rename, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { release } from 'node:os';
import { writeFileAtomic } from '../../util/atomic.js';
import { native } from '../../native/native.js';
import { isErrno } from '../../errors.js';
import { execTool } from '../../util/exec.js';
import { mountOf } from '../mount-table.js';

// Probes run once at init, each inside the driver's home so they test the filesystem layers will live on.

export async function withScratch<T>(home: string, prefix: string, dirs: string[], fn: (td: string) => Promise<T>): Promise<T> {
  const td = await mkdtemp(join(home, prefix));
  try {
    for (const d of dirs) await mkdir(join(td, d), { recursive: true });
    return await fn(td);
  } finally {
    await rm(td, { recursive: true, force: true });
  }
}

/**
 * A scratch overlay mount. `volatile` (Linux 5.10+) spares its unmount the sync of the whole backing
 * filesystem, which right after a big pull can take seconds; older kernels refuse it and mount without.
 */
function mountOverlay(td: string, lowers: string[], upper: string): () => void {
  const lowerdir = lowers.map((l) => join(td, l)).join(':');
  const merged = join(td, 'merged');
  const data = `lowerdir=${lowerdir},upperdir=${join(td, upper)},workdir=${join(td, 'work')}`;
  try {
    native.mount('overlay', merged, 'overlay', 0, `${data},volatile`);
  } catch (e) {
    if (!isErrno(e, 'EINVAL')) throw e;
    native.mount('overlay', merged, 'overlay', 0, data);
  }
  return () => native.umount(merged, 0);
}

/** A real overlay mount with two lowers; returns why it failed, or null when overlayfs works here. */
export async function overlayMountProblem(home: string): Promise<string | null> {
  return withScratch(home, 'check-overlayfs-support', ['lower1', 'lower2', 'upper', 'work', 'merged'], async (td) => {
    try {
      mountOverlay(td, ['lower2', 'lower1'], 'upper')();
      return null;
    } catch (e) {
      return `test mount failed: ${(e as Error).message}`;
    }
  });
}

/**
 * Whether tarring the upper directory gives a correct diff (Docker's doesSupportNativeDiff). It does
 * not when the kernel copies the opaque flag up by mistake (before 4.8), or when redirect_dir is on:
 * then a renamed lower directory is an upper directory that merely points at the old one, which a
 * tar of the upper cannot express. Returns the reason native diff is unsafe, or null.
 */
export async function nativeDiffProblem(home: string): Promise<string | null> {
  return withScratch(home, 'opaque-bug-check', ['l1/d', 'l2/d', 'l3', 'work', 'merged'], async (td) => {
    native.lsetxattr(join(td, 'l2', 'd'), 'trusted.overlay.opaque', Buffer.from('y'));
    const unmount = mountOverlay(td, ['l2', 'l1'], 'l3');
    try {
      await writeFile(join(td, 'merged', 'd', 'f'), '');
      if (native.lgetxattr(join(td, 'l3', 'd'), 'trusted.overlay.opaque')?.toString() === 'y') {
        return 'the kernel copies the opaque flag up by mistake (fixed in kernel 4.8)';
      }
      try {
        await rename(join(td, 'merged', 'd'), join(td, 'merged', 'd2'));
      } catch (e) {
        if (isErrno(e, 'EXDEV')) return null; // no redirect_dir: directory renames are refused, as native diff needs
        throw e;
      }
      if (native.lgetxattr(join(td, 'l3', 'd2'), 'trusted.overlay.redirect') !== null) {
        return 'the kernel has CONFIG_OVERLAY_FS_REDIRECT_DIR enabled';
      }
      return null;
    } finally {
      unmount();
    }
  });
}

/**
 * d_type (file types in readdir) is what overlayfs needs to find whiteouts. Only xfs formatted with
 * ftype=0 lacks it in practice; Node cannot see DT_UNKNOWN itself (it stats instead), so ask xfs.
 */
export async function supportsDType(home: string, backingFs: string): Promise<boolean> {
  if (backingFs !== 'xfs') return true;
  const { stdout } = await execTool('xfs_info', [mountOf(home).mountPoint]);
  return !/ftype=0\b/.test(stdout);
}

/** The kernel's default for metadata-only copy-up, which our mounts inherit (we never pass metacopy=). */
export async function usingMetacopy(): Promise<boolean> {
  try {
    return (await readFile('/sys/module/overlay/parameters/metacopy', 'utf8')).trim() === 'Y';
  } catch {
    return false;
  }
}

/** What the probes found, for an unchanged kernel and backing filesystem. */
export interface ProbeVerdict {
  nativeDiffProblem: string | null;
}

const probeKey = (home: string) => `${release()} ${native.statfs(home).type}`;

/**
 * The verdict kept in `<home>/.probes.json`, if the kernel and the backing filesystem are still those it
 * was found on. Each probe is a real mount whose unmount syncs the whole filesystem: a daemon pays that
 * once, every CLI invocation would pay it again.
 */
export async function readProbeVerdict(home: string): Promise<ProbeVerdict | undefined> {
  try {
    const cached = JSON.parse(await readFile(join(home, '.probes.json'), 'utf8')) as { key: string; verdict: ProbeVerdict };
    return cached.key === probeKey(home) ? cached.verdict : undefined;
  } catch (e) {
    if (isErrno(e, 'ENOENT') || e instanceof SyntaxError) return undefined;
    throw e;
  }
}

export async function writeProbeVerdict(home: string, verdict: ProbeVerdict): Promise<void> {
  await writeFileAtomic(join(home, '.probes.json'), JSON.stringify({ key: probeKey(home), verdict }));
}
