import { randomBytes } from 'node:crypto';
import type { Stores } from '../stores.js';
import { resolveImage } from '../image/resolve-image.js';
import { imageTopLayer } from '../image/image-layers.js';
import { setupInitLayer } from './init-layer.js';
import { randomName, validateName } from './names.js';
import type { ContainerRecord } from './container-store.js';
import { createMounts, planMounts, type MountFlags } from './container-mounts.js';
import { removeVolumesQuietly } from '../volume/manage-volumes.js';

export interface CreateContainerOptions {
  image: string;
  name?: string;
  /** Overrides the image's Cmd (docker create IMAGE [COMMAND...]). */
  cmd?: string[];
  entrypoint?: string[];
  env?: string[];
  workingDir?: string;
  user?: string;
  hostname?: string;
  labels?: Record<string, string>;
  /** Per-container storage options (`size` on overlay2 with xfs quota). */
  storageOpt?: Record<string, string>;
  /** `-v`, `--mount`, `--volumes-from`, `--read-only`. */
  mounts?: MountFlags;
}

/**
 * A new container: image top layer -> `<mount-id>-init` -> the container's read-write layer. Under the image
 * lock, which rmi and prune take to delete images and release their layers: the image cannot go away between
 * being resolved and being held by the container's layer and record.
 */
export function createContainer(s: Stores, opts: CreateContainerOptions): Promise<ContainerRecord> {
  return s.images.lock(() => create(s, opts));
}

async function create(s: Stores, opts: CreateContainerOptions): Promise<ContainerRecord> {
  const image = await resolveImage(s, opts.image);
  const id = randomBytes(32).toString('hex');
  const imgCfg = image.config.config ?? {};
  const plan = await planMounts(s, opts.mounts ?? {}, Object.keys(imgCfg.Volumes ?? {}));
  const rec: ContainerRecord = {
    ID: id,
    Created: new Date().toISOString(),
    Name: `/${opts.name !== undefined ? validateName(opts.name) : randomName((n) => s.containers.nameTaken(n))}`,
    Image: image.id,
    Driver: s.driver.name,
    Config: {
      ...imgCfg,
      Hostname: opts.hostname ?? id.slice(0, 12),
      Image: opts.image,
      Env: [...(imgCfg.Env ?? []), ...(opts.env ?? [])],
      Cmd: opts.cmd && opts.cmd.length > 0 ? opts.cmd : imgCfg.Cmd,
      Entrypoint: opts.entrypoint ?? imgCfg.Entrypoint,
      WorkingDir: opts.workingDir ?? imgCfg.WorkingDir ?? '',
      User: opts.user ?? imgCfg.User ?? '',
      Labels: { ...(imgCfg.Labels ?? {}), ...(opts.labels ?? {}) },
      ...(plan.configVolumes.length > 0 ? { Volumes: { ...(imgCfg.Volumes ?? {}), ...Object.fromEntries(plan.configVolumes.map((v) => [v, {}])) } } : {}),
    },
    State: { Status: 'created', Running: false, ExitCode: 0, StartedAt: '0001-01-01T00:00:00Z', FinishedAt: '0001-01-01T00:00:00Z', Pid: 0 },
    HostConfig: plan.hostConfig,
  };
  // Checked early to fail fast, and again under the lock: layers come first so a visible container always has them.
  await s.containers.checkNameFree(rec.Name);
  const mount = await s.layers.createRWLayer(id, imageTopLayer(image), (root) => setupInitLayer(root), opts.storageOpt);
  const createdVolumes: string[] = [];
  try {
    // Volumes are made under the containers' lock, so `volume rm`/`prune` never sees one before its user.
    await s.containers.lock(async () => {
      // A generated name another process took meanwhile is simply generated again.
      if (opts.name === undefined) rec.Name = `/${randomName((n) => s.containers.nameTaken(n))}`;
      await s.containers.checkNameFree(rec.Name);
      rec.MountPoints = await createMounts(s, plan, mount.mountID, createdVolumes);
      await s.containers.add(rec);
    });
  } catch (e) {
    await removeVolumesQuietly(s, createdVolumes);
    await s.layers.releaseRWLayer(mount);
    throw e;
  }
  return rec;
}
