import type { Stores } from '../stores.js';
import { removeContainer } from '../container/remove-container.js';
import { containerSizes } from '../container/list-containers.js';
import { pruneImages, type DeleteResponse } from '../image/remove-image.js';

export interface PruneReport {
  ContainersDeleted: string[];
  ImagesDeleted: DeleteResponse[];
  SpaceReclaimed: number;
}

/** `docker system prune [-a]`: stopped containers, then dangling (or, with `all`, unused) images, then crash leftovers. */
export async function systemPrune(s: Stores, opts: { all?: boolean } = {}): Promise<PruneReport> {
  const removed: string[] = [];
  let reclaimed = 0;
  for (const c of await s.containers.list()) {
    if (c.State.Running) continue;
    reclaimed += (await containerSizes(s, c).catch(() => ({ SizeRw: 0 }))).SizeRw;
    removed.push(await removeContainer(s, c.ID));
  }
  const images = await pruneImages(s, opts);
  await s.layers.cleanupOrphans();
  return { ContainersDeleted: removed, ImagesDeleted: images.ImagesDeleted, SpaceReclaimed: reclaimed + images.SpaceReclaimed };
}
