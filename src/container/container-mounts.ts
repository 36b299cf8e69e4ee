import { lstatSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { posix } from 'node:path';
import type { Stores } from '../stores.js';
import { invalidArgument, isErrno } from '../errors.js';
import { resolveInRoot } from '../archive/root-path.js';
import { copyTree } from '../util/copy-tree.js';
import { VolumeStore } from '../volume/volume-store.js';
import { withVolumeData } from '../volume/local-volume.js';
import { parseMountFlag, parseVolumeFlag, parseVolumesFrom, type MountPoint, type MountRecord, type MountRequest } from './mount-spec.js';

/** The mount flags of `create` (and later `run`). */
export interface MountFlags {
  /** `-v` */
  volumes?: string[];
  /** `--mount` */
  mounts?: string[];
  volumesFrom?: string[];
  readOnly?: boolean;
}

/** The HostConfig fields about storage, as Docker's hostconfig.json holds them. */
export interface ContainerHostConfig {
  Binds: string[] | null;
  Mounts?: MountRecord[];
  VolumesFrom: string[] | null;
  ReadonlyRootfs: boolean;
}

/** What a container will mount, checked, with nothing created yet. */
export interface MountPlan {
  mounts: Array<{ request: MountRequest } | { inherited: MountPoint }>;
  hostConfig: ContainerHostConfig;
  /** `-v /path`: anonymous volumes that docker records in Config.Volumes. */
  configVolumes: string[];
}

async function checkBindSource(path: string): Promise<void> {
  try {
    await stat(path);
  } catch (e) {
    if (isErrno(e, 'ENOENT') || isErrno(e, 'ENOTDIR')) throw invalidArgument(`invalid mount config for type "bind": bind source path does not exist: ${path}`);
    throw e;
  }
}

/**
 * Parse and check every mount flag against the image's VOLUMEs, in Docker's order: `--volumes-from` first,
 * then `-v`/`--mount` (which override an inherited mount at the same destination, and may not repeat one),
 * then the image's VOLUMEs where nothing else is mounted. Creates nothing, so bad input changes nothing.
 */
export async function planMounts(s: Stores, flags: MountFlags, imageVolumes: string[]): Promise<MountPlan> {
  const byDest = new Map<string, { request: MountRequest } | { inherited: MountPoint }>();
  for (const spec of flags.volumesFrom ?? []) {
    const { container, readOnly } = parseVolumesFrom(spec);
    const from = await s.containers.resolve(container);
    for (const m of Object.values(from.MountPoints ?? {})) byDest.set(m.Destination, { inherited: { ...m, RW: m.RW && !readOnly } });
  }
  const user = new Map<string, MountRequest>();
  const add = async (r: MountRequest) => {
    if (user.has(r.target)) throw invalidArgument(`Duplicate mount point: ${r.target}`);
    if (r.type === 'bind') await checkBindSource(r.source);
    user.set(r.target, r);
  };
  const binds: string[] = [];
  const configVolumes: string[] = [];
  for (const spec of flags.volumes ?? []) {
    const r = parseVolumeFlag(spec);
    await add(r);
    if (r.source === '') configVolumes.push(r.target);
    else binds.push(spec);
  }
  const records: MountRecord[] = [];
  for (const csv of flags.mounts ?? []) {
    const { request, record } = parseMountFlag(csv);
    await add(request);
    records.push(record);
  }
  for (const [dest, r] of user) byDest.set(dest, { request: r });
  for (const v of imageVolumes) {
    const dest = posix.normalize(v).replace(/(.)\/+$/, '$1');
    if (!dest.startsWith('/') || dest === '/' || byDest.has(dest)) continue;
    byDest.set(dest, { request: { type: 'volume', source: '', target: dest, readOnly: false, copyData: true, mode: '', propagation: '', volumeOpts: {}, volumeLabels: {} } });
  }
  return {
    mounts: [...byDest.values()],
    hostConfig: {
      Binds: binds.length > 0 ? binds : null,
      ...(records.length > 0 ? { Mounts: records } : {}),
      VolumesFrom: flags.volumesFrom && flags.volumesFrom.length > 0 ? flags.volumesFrom : null,
      ReadonlyRootfs: flags.readOnly ?? false,
    },
    configVolumes,
  };
}

/**
 * Make the planned mounts real: named volumes are created if missing, anonymous ones made, and an empty
 * volume mounted where the image has a directory is filled with that directory (owners, modes, xattrs
 * kept; Docker's copyExistingContents) unless nocopy. `created` lists the volumes this call made, which
 * the caller removes if the container is not saved in the end.
 */
export async function createMounts(s: Stores, plan: MountPlan, mountID: string, created: string[]): Promise<Record<string, MountPoint>> {
  const volumes = new VolumeStore(s.root);
  const points: Record<string, MountPoint> = {};
  let rootfs: string | null = null;
  try {
    for (const m of plan.mounts) {
      if ('inherited' in m) {
        points[m.inherited.Destination] = m.inherited;
        continue;
      }
      const r = m.request;
      const point: MountPoint = { Type: r.type, Name: '', Source: r.source, Destination: r.target, Driver: '', Mode: r.mode, RW: !r.readOnly, Propagation: r.propagation };
      points[r.target] = point;
      if (r.type !== 'volume') continue;
      const { volume, created: isNew } = await volumes.create(r.source === '' ? undefined : r.source, { labels: r.volumeLabels, driverOpts: r.volumeOpts });
      if (isNew) created.push(volume.Name);
      Object.assign(point, { Name: volume.Name, Source: volume.Mountpoint, Driver: 'local' });
      if (!r.copyData) continue;
      rootfs ??= await s.driver.get(mountID);
      const imagePath = resolveInRoot(rootfs, r.target);
      if (!lstatSync(imagePath, { throwIfNoEntry: false })?.isDirectory()) continue;
      await withVolumeData(volume.Mountpoint, volume.Options, async (data) => {
        if ((await readdir(data)).length === 0) await copyTree(imagePath, data);
      });
    }
  } finally {
    if (rootfs !== null) await s.driver.put(mountID);
  }
  return points;
}
