import type { Stores } from '../stores.js';
import type { Digest } from '../util/digest.js';
import { chainIDs } from '../layer/chain-id.js';
import type { Image } from './image-store.js';

/** Chain id of the image's top layer (what the image holds in the layer store), null with no layers. */
export function imageTopLayer(img: Image): Digest | null {
  return chainIDs(img.config.rootfs.diff_ids).at(-1) ?? null;
}

/** Top chain ids of every image in the store. */
export async function imageTops(s: Stores): Promise<Set<Digest>> {
  const tops = new Set<Digest>();
  for (const img of await s.images.list()) {
    const top = imageTopLayer(img);
    if (top !== null) tops.add(top);
  }
  return tops;
}

/** The image's size as docker reports it: the content of all its layers. */
export async function imageSize(s: Stores, img: Image): Promise<number> {
  let size = 0;
  for (const chain of chainIDs(img.config.rootfs.diff_ids)) size += (await s.layers.get(chain)).size;
  return size;
}
