import { closeSync, lstatSync, openSync, readdirSync, unlinkSync, fchownSync, constants as C } from 'node:fs';
import { native } from '../../native/native.js';
import { isErrno } from '../../errors.js';
import { mergedChild } from '../../archive/changes.js';
import { aufsForm } from '../../archive/whiteout-form.js';
import { OVERLAY_XATTR_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX } from '../../archive/whiteout.js';

/** xattr prefixes fuse-overlayfs keeps for itself (origin, opaque, ...): never layer content. */
const PRIVATE_XATTR_PREFIXES = [OVERLAY_XATTR_PREFIX, 'user.overlay.', 'user.fuseoverlayfs.'];
/** The opaque flags fuse-overlayfs may set, privileged first. */
const OPAQUE_XATTRS = ['trusted.overlay.opaque', 'user.overlay.opaque', 'user.fuseoverlayfs.opaque'];
/** fuse-overlayfs marks an opaque directory with a `.wh..wh..opq` file and a whiteout of `.opq` beside it. */
const FUSE_OPAQUE_TWIN = '.wh..opq';
/** Mode of the markers written here, as the userspace union and AUFS write theirs. */
const MARKER_MODE = 0o444;

/**
 * Turn what fuse-overlayfs wrote into a layer directory it used as its upper back into the AUFS form:
 * char 0/0 whiteouts become `.wh.<name>` files, opaque xattrs a `.wh..wh..opq` file, and its private
 * xattrs and twin markers go. Markers that hide nothing of `lowers` (the layer directories below,
 * topmost first, in AUFS form) are dropped: fuse-overlayfs makes every new directory opaque. Run only
 * while nothing has the directory mounted.
 */
export function normaliseUpper(upper: string, lowers: readonly string[]): void {
  normaliseDir(upper, [...lowers]);
}

/** One directory: its own opacity first, then its entries; `below` holds the lower directories it covers (null where none). */
function normaliseDir(dir: string, below: Array<string | null>): void {
  // Markers removed or made here change the directory's times, which are layer content: put back after.
  const before = lstatSync(dir, { bigint: true });
  normaliseEntries(dir, below);
  if (lstatSync(dir, { bigint: true }).mtimeNs !== before.mtimeNs) {
    native.lutimes(dir, Number(before.atimeNs / NS), Number(before.atimeNs % NS), Number(before.mtimeNs / NS), Number(before.mtimeNs % NS));
  }
}

const NS = 1_000_000_000n;

function normaliseEntries(dir: string, below: Array<string | null>): void {
  const opaque = OPAQUE_XATTRS.some((x) => native.lgetxattr(dir, x)?.toString() === 'y') || aufsForm.opaque(dir);
  stripPrivateXattrs(dir);
  const covers = below.some((d) => d !== null);
  if (opaque && covers) {
    const st = lstatSync(dir);
    ensureMarker(`${dir}/${WHITEOUT_OPAQUE}`, st.uid, st.gid);
  } else removeIfPresent(`${dir}/${WHITEOUT_OPAQUE}`);
  const lower = opaque ? [] : below;
  for (const name of readdirSync(dir)) {
    const host = `${dir}/${name}`;
    const st = lstatSync(host, { throwIfNoEntry: false });
    if (st === undefined) continue; // a marker this walk already replaced
    if (st.isCharacterDevice() && st.rdev === 0) {
      unlinkSync(host);
      if (name !== FUSE_OPAQUE_TWIN && mergedChild(lower, name, aufsForm) !== null) ensureMarker(`${dir}/${WHITEOUT_PREFIX}${name}`, st.uid, st.gid);
      continue;
    }
    if (name.startsWith(WHITEOUT_PREFIX)) continue; // already AUFS form
    if (!st.isDirectory()) {
      stripPrivateXattrs(host);
      continue;
    }
    const child = mergedChild(lower, name, aufsForm);
    normaliseDir(host, child?.st.isDirectory() ? child.dirs : []);
  }
}

function stripPrivateXattrs(path: string): void {
  for (const name of native.llistxattr(path)) {
    if (PRIVATE_XATTR_PREFIXES.some((p) => name.startsWith(p))) native.lremovexattr(path, name);
  }
}

/** An empty marker file at `path` owned by uid/gid, unless one is there. */
function ensureMarker(path: string, uid: number, gid: number): void {
  let fd: number;
  try {
    fd = openSync(path, C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW, MARKER_MODE);
  } catch (e) {
    if (isErrno(e, 'EEXIST')) return;
    throw e;
  }
  try {
    fchownSync(fd, uid, gid);
  } finally {
    closeSync(fd);
  }
}

function removeIfPresent(path: string): void {
  try {
    unlinkSync(path);
  } catch (e) {
    if (!isErrno(e, 'ENOENT')) throw e;
  }
}
