/** OCI/AUFS whiteout names in layer tars (the overlay on-disk forms are char 0:0 devices and the opaque xattr). */
export const WHITEOUT_PREFIX = '.wh.';
/** Names starting with this are metadata for the union, never files (`.wh..wh.plnk`, `.wh..wh..opq`). */
export const WHITEOUT_META_PREFIX = '.wh..wh.';
export const WHITEOUT_OPAQUE = '.wh..wh..opq';
/** Overlayfs marks a directory that hides everything below it with this xattr set to "y". */
export const OVERLAY_OPAQUE_XATTR = 'trusted.overlay.opaque';
/** Overlayfs' private xattrs: never taken from an image (they would let it forge whiteouts) nor exported. */
export const OVERLAY_XATTR_PREFIX = 'trusted.overlay.';

/** The name a `.wh.<name>` entry deletes, or null when `base` is not a plain whiteout. */
export function whiteoutTarget(base: string): string | null {
  if (!base.startsWith(WHITEOUT_PREFIX) || base.startsWith(WHITEOUT_META_PREFIX)) return null;
  return base.slice(WHITEOUT_PREFIX.length);
}
