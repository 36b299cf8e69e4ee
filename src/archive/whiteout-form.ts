import { lstatSync, type BigIntStats } from 'node:fs';
import { native } from '../native/native.js';
import { OVERLAY_OPAQUE_XATTR, WHITEOUT_OPAQUE, WHITEOUT_PREFIX, whiteoutTarget } from './whiteout.js';

/**
 * How a layer directory on disk records what it hides of the layers below: overlayfs' form (a char
 * 0/0 device at the deleted name, the `trusted.overlay.opaque` xattr) or AUFS's form, which is the
 * OCI tar form (`.wh.<name>` files beside the deleted name, a `.wh..wh..opq` file in the directory).
 */
export interface WhiteoutForm {
  /**
   * What an entry of a layer directory is: null for content, else the name it deletes in the layers
   * below, or '' for union metadata that deletes nothing (AUFS `.wh..wh.*` files).
   */
  deletes(name: string, st: BigIntStats): string | null;
  /** Whether layer directory `dir` deletes `name` with a marker beside it (AUFS only; overlay's marker sits at the name). */
  besideWhiteout(dir: string, name: string): boolean;
  /** Whether layer directory `dir` hides everything the layers below have there. */
  opaque(dir: string): boolean;
}

const exists = (p: string) => lstatSync(p, { throwIfNoEntry: false }) !== undefined;

export const overlayForm: WhiteoutForm = {
  deletes: (name, st) => (st.isCharacterDevice() && st.rdev === 0n ? name : null),
  besideWhiteout: () => false,
  opaque: (dir) => native.lgetxattr(dir, OVERLAY_OPAQUE_XATTR)?.toString() === 'y',
};

export const aufsForm: WhiteoutForm = {
  deletes: (name) => (name.startsWith(WHITEOUT_PREFIX) ? (whiteoutTarget(name) ?? '') : null),
  besideWhiteout: (dir, name) => exists(`${dir}/${WHITEOUT_PREFIX}${name}`),
  opaque: (dir) => exists(`${dir}/${WHITEOUT_OPAQUE}`),
};
