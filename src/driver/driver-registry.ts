import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Driver, DriverFactory } from './driver.js';
import { capability, conflict, invalidArgument, isErrno, isStrataError, StrataError } from '../errors.js';
import { overlay2 } from './overlay2/overlay2.js';
import { fuseOverlayfs } from './fuse-overlayfs/fuse-overlayfs.js';
import { btrfsDriver } from './btrfs/btrfs.js';
import { zfsDriver } from './zfs/zfs.js';
import { devicemapper } from './devicemapper/devicemapper.js';
import { overlay } from './overlay/overlay.js';
import { vfs } from './vfs/vfs.js';
import { aufs } from './aufs/aufs.js';

/** Every driver strata has, by name: a new driver plugs in by adding its factory here. */
export const driverFactories: ReadonlyMap<string, DriverFactory> = new Map([overlay2, fuseOverlayfs, btrfsDriver, zfsDriver, devicemapper, overlay, aufs, vfs].map((f) => [f.name, f]));

/**
 * Docker's order of preference (daemon/graphdriver/driver_linux.go); names without a factory are skipped.
 * aufs is left out: its init needs nothing the machine may lack, so it would always win over vfs; it is
 * chosen by name or by its state in the data-root.
 */
export const DRIVER_PRIORITY: readonly string[] = ['overlay2', 'fuse-overlayfs', 'btrfs', 'zfs', 'vfs'];

export interface SelectDriverOptions {
  /** The data-root. */
  root: string;
  /** `--storage-driver`, when given. */
  name?: string;
  /** `storage-opts`, split into key/value. */
  options: Record<string, string>;
}

async function hasState(root: string, name: string): Promise<boolean> {
  try {
    return (await readdir(join(root, name))).length > 0;
  } catch (e) {
    if (isErrno(e, 'ENOENT') || isErrno(e, 'ENOTDIR')) return false;
    throw e;
  }
}

/**
 * Pick and initialise the storage driver as dockerd does: an explicit name wins; else the one driver
 * that already has state in the data-root (vfs does not count, as in Docker); else the first driver
 * of the priority list the machine can run. Only a capability failure moves on to the next driver;
 * any other init error (a bad option, say) is the user's to fix and stops selection.
 */
export async function selectDriver(opts: SelectDriverOptions): Promise<Driver> {
  const init = (f: DriverFactory) => f.init({ root: opts.root, options: opts.options });
  if (opts.name !== undefined && opts.name !== '') {
    const factory = driverFactories.get(opts.name);
    if (factory === undefined) {
      throw invalidArgument(`unknown storage driver '${opts.name}' (known: ${[...driverFactories.keys()].join(', ')})`);
    }
    return init(factory);
  }
  const prior: string[] = [];
  for (const name of driverFactories.keys()) {
    if (name !== 'vfs' && (await hasState(opts.root, name))) prior.push(name);
  }
  if (prior.length > 1) {
    throw conflict(`${opts.root} contains several valid storage drivers: ${prior.join(', ')}; clean up or explicitly choose storage driver (--storage-driver <DRIVER>)`);
  }
  if (prior.length === 1) {
    try {
      return await init(driverFactories.get(prior[0]!)!);
    } catch (e) {
      if (!isStrataError(e)) throw e;
      throw new StrataError(e.code, `prior storage driver ${prior[0]} failed: ${e.message}`, { cause: e });
    }
  }
  const reasons: string[] = [];
  for (const name of DRIVER_PRIORITY) {
    const factory = driverFactories.get(name);
    if (factory === undefined) continue;
    try {
      return await init(factory);
    } catch (e) {
      if (!isStrataError(e, 'ErrCapability')) throw e;
      reasons.push(e.message);
    }
  }
  throw capability(`no supported storage driver found: ${reasons.join('; ')}`);
}
