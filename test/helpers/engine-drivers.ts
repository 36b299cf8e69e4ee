import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { hasZfsTools, type ZfsPool } from '../fixtures/zfs-pool.js';
import { isRoot } from './caps.js';

const procFs = existsSync('/proc/filesystems') ? readFileSync('/proc/filesystems', 'utf8') : '';

/** A storage driver an engine-level test can run on, and what it needs from the machine. */
export interface EngineDriver {
  name: string;
  /** This machine can run it. */
  have: boolean;
  /** What it needs, for requireCap. */
  what: string;
  /** Storage options for a data-root whose scratch space is `tmp` (zfs: a new dataset in `zpool`). */
  opts(tmp: string, zpool?: ZfsPool): string[];
}

/** Every driver strata has, with small pools: each test data-root gets its own. */
export const ALL_ENGINE_DRIVERS: EngineDriver[] = [
  { name: 'overlay2', have: isRoot, what: 'root', opts: () => [] },
  { name: 'fuse-overlayfs', have: isRoot && existsSync('/usr/bin/fuse-overlayfs') && existsSync('/dev/fuse'), what: 'root and fuse-overlayfs', opts: () => [] },
  { name: 'overlay', have: isRoot, what: 'root', opts: () => [] },
  {
    name: 'btrfs',
    have: isRoot && existsSync('/usr/sbin/mkfs.btrfs') && procFs.includes('btrfs'),
    what: 'root, kernel btrfs and btrfs-progs',
    opts: (tmp) => [`btrfs.pool=${join(tmp, 'pool.img')}`, 'btrfs.pool_size=1G'],
  },
  {
    name: 'zfs',
    have: isRoot && hasZfsTools,
    what: 'root, /dev/fuse and zfs-fuse',
    opts: (tmp, zpool) => {
      if (zpool === undefined) throw new Error('zfs needs a pool (createZfsPool)');
      const fsname = `${zpool.name}/${tmp.split('/').pop()!.replace(/[^A-Za-z0-9_.-]/g, '')}`;
      execFileSync('zfs', ['create', fsname]);
      return [`zfs.fsname=${fsname}`];
    },
  },
  {
    name: 'devicemapper',
    have: isRoot && existsSync('/usr/sbin/mkfs.xfs') && existsSync('/usr/sbin/mkfs.ext4') && existsSync('/dev/loop-control'),
    what: 'root, loop devices, xfs and ext4 tools',
    opts: () => ['dm.loopdatasize=2G', 'dm.loopmetadatasize=16M', 'dm.basesize=256M', 'dm.fs=ext4'],
  },
  { name: 'aufs', have: true, what: '', opts: () => [] },
  { name: 'vfs', have: true, what: '', opts: () => [] },
];
