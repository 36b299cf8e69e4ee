import type { Stores } from '../stores.js';
import { conflict, isStrataError } from '../errors.js';
import { removeVolumesQuietly, volumeUsers } from '../volume/manage-volumes.js';
import { isAnonymous, VolumeStore } from '../volume/volume-store.js';
import { closeContainerFsForRemoval } from './open-container-fs.js';

/**
 * `docker rm`: the container's init and read-write layers, then its record; with `volumes` (`-v`) also its
 * anonymous volumes that no other container uses (named volumes always stay).
 */
export async function removeContainer(s: Stores, idOrName: string, opts: { force?: boolean; volumes?: boolean } = {}): Promise<string> {
  const c = await s.containers.resolve(idOrName);
  if (c.State.Running && !opts.force) {
    throw conflict(`cannot remove container "${c.Name}": container is running: stop the container before removing or force remove`);
  }
  await closeContainerFsForRemoval(s, c.ID, c.Name, opts.force === true);
  try {
    await s.layers.releaseRWLayer(await s.layers.getMount(c.ID));
  } catch (e) {
    // A removal interrupted after the layers went: finish it.
    if (!isStrataError(e, 'ErrNotFound')) throw e;
  }
  if (!opts.volumes) {
    await s.containers.remove(c.ID);
    return c.ID;
  }
  await s.containers.lock(async () => {
    await s.containers.remove(c.ID);
    const users = await volumeUsers(s);
    const vs = new VolumeStore(s.root);
    const names = Object.values(c.MountPoints ?? {}).filter((m) => m.Type === 'volume' && !users.has(m.Name)).map((m) => m.Name);
    const anonymous: string[] = [];
    for (const n of names) if ((await vs.find(n).then((v) => v && isAnonymous(v))) === true) anonymous.push(n);
    await removeVolumesQuietly(s, anonymous);
  });
  return c.ID;
}
