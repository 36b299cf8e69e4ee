import { Readable } from 'node:stream';
import type { Stores } from '../stores.js';
import type { Change } from '../driver/driver.js';
import { exportTree } from '../archive/export-changes.js';

/** `docker diff`: the container's own changes, its init layer excluded. */
export async function containerChanges(s: Stores, idOrName: string): Promise<Change[]> {
  const c = await s.containers.resolve(idOrName);
  return s.layers.changes(await s.layers.getMount(c.ID));
}

/** Mount the container's union view (reference counted across processes) and return its path. */
export async function mountContainer(s: Stores, idOrName: string): Promise<string> {
  const c = await s.containers.resolve(idOrName);
  return s.driver.get((await s.layers.getMount(c.ID)).mountID);
}

export async function unmountContainer(s: Stores, idOrName: string): Promise<void> {
  const c = await s.containers.resolve(idOrName);
  await s.driver.put((await s.layers.getMount(c.ID)).mountID);
}

/** `docker export`: the container's whole filesystem as a tar; the mount is released when the stream ends. */
export async function exportContainer(s: Stores, idOrName: string): Promise<Readable> {
  const c = await s.containers.resolve(idOrName);
  const { mountID } = await s.layers.getMount(c.ID);
  const root = await s.driver.get(mountID);
  const tar = exportTree(root);
  async function* released(): AsyncGenerator<Buffer> {
    try {
      yield* tar;
    } finally {
      await s.driver.put(mountID);
    }
  }
  return Readable.from(released(), { objectMode: false });
}
