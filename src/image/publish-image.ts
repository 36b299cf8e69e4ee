import type { Stores } from '../stores.js';
import { conflict } from '../errors.js';
import { sha256, type Digest } from '../util/digest.js';
import { chainIDs } from '../layer/chain-id.js';
import type { Image } from './image-store.js';
import { imageTops } from './image-layers.js';
import { parseImageConfig } from './manifest.js';

/**
 * Make a new image visible (its config stored, then `named`: tagged), under the image lock and only while its
 * layers are there. Its layers were registered before, outside the lock, and nothing holds a layer no image
 * names yet: an rmi or prune in another process may release one that an image being deleted shared, and it
 * does so under the same lock. So an image never appears without its layers; the operation fails instead.
 */
export async function publishImage(s: Stores, raw: Buffer, opts: { parent?: Digest; named?: (image: Image) => Promise<void> } = {}): Promise<Image> {
  const top = chainIDs(parseImageConfig(raw).rootfs.diff_ids).at(-1);
  return s.images.lock(async () => {
    // A layer is only released once nothing is above it, so the top layer being there means all of them are.
    if (top !== undefined && !(await s.layers.has(top))) {
      throw conflict(`the layers of image ${sha256(raw)} were removed while it was being made (by an image removal or prune at the same time); try again`);
    }
    const image = await s.images.create(raw, opts.parent);
    await opts.named?.(image);
    return image;
  });
}

/**
 * Drop layers registered for an image that is not going to be published (topmost first), each only if nothing
 * holds it: under the image lock, as another process may be publishing an image that holds them.
 */
export async function releaseUnpublished(s: Stores, chains: readonly Digest[]): Promise<void> {
  await s.images.lock(async () => {
    const tops = await imageTops(s);
    for (const chain of chains) await s.layers.releaseUnreferenced(chain, tops).catch(() => undefined);
  });
}
