import { Readable } from 'node:stream';
import type { Stores } from '../stores.js';
import type { Change } from '../driver/driver.js';
import { exportFsTree, exportTree } from '../archive/export-changes.js';
import { openContainerFs } from './open-container-fs.js';
import { unionXattrs } from './union-xattrs.js';

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

/**
 * `docker export`: the container's whole filesystem as a tar, read through the driver's openFs when it has
 * one (no mount), else from its mount; what it holds is released when the stream ends.
 */
export async function exportContainer(s: Stores, idOrName: string): Promise<Readable> {
  let tar: Readable;
  let release: () => Promise<void>;
  if (s.driver.openFs) {
    const fs = await openContainerFs(s, idOrName);
    tar = exportFsTree(fs, unionXattrs(fs));
    release = () => fs.close();
  } else {
    const c = await s.containers.resolve(idOrName);
    const { mountID } = await s.layers.getMount(c.ID);
    tar = exportTree(await s.driver.get(mountID));
    release = () => s.driver.put(mountID);
  }
  async function* released(): AsyncGenerator<Buffer> {
    try {
      yield* tar;
    } finally {
      await release();
    }
  }
  return Readable.from(released(), { objectMode: false });
}
