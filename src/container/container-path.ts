import { lstatSync, readlinkSync, type Stats } from 'node:fs';
import type { Stores } from '../stores.js';
import type { UnionFs } from '../union/union-fs.js';
import type { ContainerRecord } from './container-store.js';
import type { MountPoint } from './mount-spec.js';
import { invalidArgument, isErrno } from '../errors.js';
import { VolumeStore } from '../volume/volume-store.js';
import { mountVolumeData, unmountVolumeData } from '../volume/local-volume.js';
import { openContainerFs } from './open-container-fs.js';

/** More symlinks than this in one resolution is a loop (Linux' MAXSYMLINKS). */
const MAX_SYMLINKS = 40;

/** A container's filesystem as a process inside it would see it: the root filesystem with its volumes and binds over it. */
export interface ContainerView {
  /** The root filesystem's host path; null when it is read through `fs`. */
  rootfs: string | null;
  /** The root filesystem read with no mount (the driver's openFs), or null. */
  fs: UnionFs | null;
  /** Persistent mounts (volumes, binds), longest destination first; tmpfs only exists while running. */
  mounts: MountPoint[];
  readonlyRootfs: boolean;
}

export interface ResolvedPath {
  /** Clean, absolute, symlinks resolved. */
  containerPath: string;
  /** Null for a path of a root filesystem read through the view's `fs`. */
  host: string | null;
  /** The mount holding the path; null for the root filesystem. */
  mount: MountPoint | null;
}

/**
 * Host path of a clean container path: under the mount with the longest destination that prefixes it, else
 * the rootfs (null when the rootfs is read through the view's fs, at the container path itself).
 */
export function hostOf(view: ContainerView, cpath: string): { host: string | null; mount: MountPoint | null } {
  for (const m of view.mounts) {
    if (cpath === m.Destination) return { host: m.Source, mount: m };
    if (cpath.startsWith(m.Destination + '/')) return { host: m.Source + cpath.slice(m.Destination.length), mount: m };
  }
  if (view.rootfs === null) return { host: null, mount: null };
  return { host: cpath === '/' ? view.rootfs : view.rootfs + cpath, mount: null };
}

/** lstat of a clean container path (undefined when missing), on the host or through the view's fs. */
export async function lstatIn(view: ContainerView, cpath: string): Promise<Stats | undefined> {
  const { host } = hostOf(view, cpath);
  if (host !== null) return lstatSync(host, { throwIfNoEntry: false });
  try {
    return await view.fs!.lstat(cpath);
  } catch (e) {
    if (isErrno(e, 'ENOENT') || isErrno(e, 'ENOTDIR')) return undefined;
    throw e;
  }
}

function readlinkIn(view: ContainerView, cpath: string): Promise<string> | string {
  const { host } = hostOf(view, cpath);
  return host !== null ? readlinkSync(host) : view.fs!.readlink(cpath);
}

/**
 * Resolve `p` inside the container as the kernel would inside it: symlinks are followed with the container's
 * `/` as root (absolute targets restart at it, `..` stops at it), and every prefix is looked up through the
 * mounts, so a symlink inside a volume to /etc reaches the container's /etc, never the host's. The last
 * component is followed only with `followLast`. Missing components are kept as they are.
 */
export async function resolveContainerPath(view: ContainerView, p: string, followLast: boolean): Promise<ResolvedPath> {
  if (p.includes('\0')) throw invalidArgument(`path contains a NUL byte: ${JSON.stringify(p)}`);
  const todo = p.split('/').reverse();
  const done: string[] = [];
  let links = 0;
  while (todo.length > 0) {
    const c = todo.pop()!;
    if (c === '' || c === '.') continue;
    if (c === '..') {
      done.pop();
      continue;
    }
    const last = todo.every((x) => x === '' || x === '.');
    const cpath = '/' + [...done, c].join('/');
    const { mount } = hostOf(view, cpath);
    // A mount's destination is what it mounts, even if the host source is reached through a link.
    if ((!last || followLast) && mount?.Destination !== cpath) {
      const st = await lstatIn(view, cpath);
      if (st?.isSymbolicLink()) {
        if (++links > MAX_SYMLINKS) throw invalidArgument(`too many levels of symbolic links resolving ${p} (ELOOP)`);
        const target = await readlinkIn(view, cpath);
        if (target.startsWith('/')) done.length = 0;
        todo.push(...target.split('/').reverse());
        continue;
      }
    }
    done.push(c);
  }
  const containerPath = '/' + done.join('/');
  return { containerPath, ...hostOf(view, containerPath) };
}

/**
 * The container's view, held until `release`: its root filesystem opened through the driver's openFs when
 * it has one (no mount; writable unless the rootfs is read-only), else mounted through the driver (reference
 * counted, so this works whether or not it is mounted already); volumes with a mount type mounted on their
 * data directories.
 */
export async function openContainerView(s: Stores, c: ContainerRecord): Promise<{ view: ContainerView; release(): Promise<void> }> {
  const { mountID } = await s.layers.getMount(c.ID);
  const fs = s.driver.openFs ? await openContainerFs(s, c.ID) : null;
  const rootfs = fs === null ? await s.driver.get(mountID) : null;
  const mountedVolumes: string[] = [];
  const release = async () => {
    for (const p of mountedVolumes.reverse()) unmountVolumeData(p);
    if (fs !== null) await fs.close();
    else await s.driver.put(mountID);
  };
  try {
    const mounts = Object.values(c.MountPoints ?? {})
      .filter((m) => m.Type !== 'tmpfs')
      .sort((a, b) => b.Destination.length - a.Destination.length);
    const volumes = new VolumeStore(s.root);
    for (const m of mounts) {
      const v = m.Type === 'volume' ? await volumes.find(m.Name) : null;
      if (v && (await mountVolumeData(v.Mountpoint, v.Options))) mountedVolumes.push(v.Mountpoint);
    }
    return { view: { rootfs, fs, mounts, readonlyRootfs: c.HostConfig?.ReadonlyRootfs ?? false }, release };
  } catch (e) {
    await release();
    throw e;
  }
}

export async function withContainerView<T>(s: Stores, c: ContainerRecord, fn: (view: ContainerView) => Promise<T>): Promise<T> {
  const { view, release } = await openContainerView(s, c);
  try {
    return await fn(view);
  } finally {
    await release();
  }
}
