import { native } from '../native/native.js';

// statfs f_type values, named as Docker's fsmagic names them in `info` (Backing Filesystem).
const names = new Map<number, string>([
  [0x61756673, 'aufs'],
  [0x9123683e, 'btrfs'],
  [0x28cd3d45, 'cramfs'],
  [0xf15f, 'ecryptfs'],
  [0xef53, 'extfs'],
  [0xf2f52010, 'f2fs'],
  [0x47504653, 'gpfs'],
  [0x72b6, 'jffs2'],
  [0x3153464a, 'jfs'],
  [0x6969, 'nfs'],
  [0x858458f6, 'ramfs'],
  [0x52654973, 'reiserfs'],
  [0x517b, 'smb'],
  [0x73717368, 'squashfs'],
  [0x01021994, 'tmpfs'],
  [0xa501fcf5, 'vxfs'],
  [0x58465342, 'xfs'],
  [0x2fc12fc1, 'zfs'],
  [0x794c7630, 'overlayfs'],
  [0x65735546, 'fuse'],
]);

/** Docker's name of the filesystem holding `path` ('extfs', 'xfs', 'btrfs', 'tmpfs', ... or '<unknown>'). */
export function backingFsName(path: string): string {
  const magic = native.statfs(path).type >>> 0;
  return names.get(magic) ?? '<unknown>';
}
