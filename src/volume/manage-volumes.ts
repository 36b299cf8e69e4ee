import type { Stores } from '../stores.js';
import { conflict, invalidArgument, isStrataError } from '../errors.js';
import { treeSize } from '../driver/tree-size.js';
import { isAnonymous, VolumeStore, type Volume } from './volume-store.js';
import { withVolumeData } from './local-volume.js';

export interface CreateVolumeOptions {
  name?: string;
  labels?: Record<string, string>;
  /** `-o k=v`: type, device, o. */
  driverOpts?: Record<string, string>;
  driver?: string;
}

/** A volume with what `system df -v` shows about it. */
export interface VolumeUsage extends Volume {
  UsageData: { Size: number; RefCount: number };
}

const store = (s: Stores) => new VolumeStore(s.root);

/** Volume name → ids of the containers that mount it (references are derived from the container records). */
export async function volumeUsers(s: Stores): Promise<Map<string, string[]>> {
  const users = new Map<string, string[]>();
  for (const c of await s.containers.list()) {
    for (const m of Object.values(c.MountPoints ?? {})) {
      if (m.Type !== 'volume') continue;
      const ids = users.get(m.Name) ?? [];
      if (!ids.includes(c.ID)) ids.push(c.ID);
      users.set(m.Name, ids);
    }
  }
  return users;
}

export async function createVolume(s: Stores, opts: CreateVolumeOptions = {}): Promise<Volume> {
  if (opts.driver !== undefined && opts.driver !== 'local') throw invalidArgument(`create ${opts.name ?? ''}: volume driver "${opts.driver}" is not available: strata has the local driver only`);
  return (await store(s).create(opts.name, { labels: opts.labels, driverOpts: opts.driverOpts })).volume;
}

export function inspectVolume(s: Stores, name: string): Promise<Volume> {
  return store(s).get(name);
}

/** `volume ls --filter`: dangling=true|false, name= (substring), label=KEY or KEY=VALUE, driver=local. */
export async function listVolumes(s: Stores, filters: string[] = []): Promise<Volume[]> {
  const parsed = filters.map((f) => {
    const i = f.indexOf('=');
    if (i <= 0) throw invalidArgument(`bad format of filter (expected name=value): ${f}`);
    const key = f.slice(0, i);
    if (!['dangling', 'name', 'label', 'driver'].includes(key)) throw invalidArgument(`invalid filter '${key}'`);
    const value = f.slice(i + 1);
    if (key === 'dangling' && !['true', 'false', '1', '0'].includes(value)) throw invalidArgument(`invalid filter 'dangling=${value}'`);
    return { key, value };
  });
  const users = parsed.some((f) => f.key === 'dangling') ? await volumeUsers(s) : new Map<string, string[]>();
  const ok = (v: Volume, f: { key: string; value: string }) => {
    switch (f.key) {
      case 'dangling':
        return (users.has(v.Name) ? 'false' : 'true') === (f.value === '1' ? 'true' : f.value === '0' ? 'false' : f.value);
      case 'name':
        return v.Name.includes(f.value);
      case 'driver':
        return v.Driver === f.value;
      default: {
        const j = f.value.indexOf('=');
        return j < 0 ? f.value in v.Labels : v.Labels[f.value.slice(0, j)] === f.value.slice(j + 1);
      }
    }
  };
  // Filters of one key are alternatives, different keys must all match (docker's filters.Args).
  const keys = [...new Set(parsed.map((f) => f.key))];
  return (await store(s).list()).filter((v) => keys.every((k) => parsed.filter((f) => f.key === k).some((f) => ok(v, f))));
}

/** `volume rm`: refused while a container mounts it; `force` only forgives a volume that does not exist. */
export async function removeVolume(s: Stores, name: string, opts: { force?: boolean } = {}): Promise<void> {
  const vs = store(s);
  try {
    await s.containers.lock(async () => {
      await vs.get(name);
      const users = (await volumeUsers(s)).get(name);
      if (users) throw conflict(`remove ${name}: volume is in use - [${users.join(', ')}]`);
      await vs.remove(name);
    });
  } catch (e) {
    if (opts.force && isStrataError(e, 'ErrNotFound')) return;
    throw e;
  }
}

/** Remove volumes a failed create made, or anonymous ones `rm -v` leaves unused; errors are not the caller's concern. */
export async function removeVolumesQuietly(s: Stores, names: string[]): Promise<void> {
  for (const n of names) await store(s).remove(n).catch(() => undefined);
}

async function volumeSize(v: Volume): Promise<number> {
  return withVolumeData(v.Mountpoint, v.Options, (p) => treeSize(p));
}

/** `volume prune`: unused anonymous volumes (Docker ≥ 23), or with `all` every unused volume. */
export async function pruneVolumes(s: Stores, opts: { all?: boolean; filters?: string[] } = {}): Promise<{ VolumesDeleted: string[]; SpaceReclaimed: number }> {
  const vs = store(s);
  const deleted: string[] = [];
  let reclaimed = 0;
  const candidates = await listVolumes(s, opts.filters ?? []);
  await s.containers.lock(async () => {
    const users = await volumeUsers(s);
    for (const v of candidates) {
      if (users.has(v.Name) || (!opts.all && !isAnonymous(v))) continue;
      reclaimed += await volumeSize(v).catch(() => 0);
      await vs.remove(v.Name);
      deleted.push(v.Name);
    }
  });
  return { VolumesDeleted: deleted, SpaceReclaimed: reclaimed };
}

/** Every volume with its size (bytes of its files, like `du --apparent-size`) and how many containers use it. */
export async function volumesUsage(s: Stores): Promise<VolumeUsage[]> {
  const users = await volumeUsers(s);
  const out: VolumeUsage[] = [];
  for (const v of await store(s).list()) out.push({ ...v, UsageData: { Size: await volumeSize(v), RefCount: users.get(v.Name)?.length ?? 0 } });
  return out;
}
