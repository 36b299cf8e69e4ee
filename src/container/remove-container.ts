import type { Stores } from '../stores.js';
import { conflict, isStrataError } from '../errors.js';

/** `docker rm`: the container's init and read-write layers, then its record. */
export async function removeContainer(s: Stores, idOrName: string, opts: { force?: boolean } = {}): Promise<string> {
  const c = await s.containers.resolve(idOrName);
  if (c.State.Running && !opts.force) {
    throw conflict(`cannot remove container "${c.Name}": container is running: stop the container before removing or force remove`);
  }
  try {
    await s.layers.releaseRWLayer(await s.layers.getMount(c.ID));
  } catch (e) {
    // A removal interrupted after the layers went: finish it.
    if (!isStrataError(e, 'ErrNotFound')) throw e;
  }
  await s.containers.remove(c.ID);
  return c.ID;
}
