import type { Stores } from '../stores.js';
import type { Digest } from '../util/digest.js';
import { chainIDs } from '../layer/chain-id.js';
import { listImages, type ImageSummary } from '../image/list-images.js';
import { listContainers, type ContainerSummary } from '../container/list-containers.js';
import { volumesUsage, type VolumeUsage } from '../volume/manage-volumes.js';

export interface DiskUsage {
  LayersSize: number;
  Images: ImageSummary[];
  Containers: ContainerSummary[];
  Volumes: VolumeUsage[];
  BuildCache: unknown[];
}

/**
 * `docker system df`: each image's SharedSize is the content of its layers that another image also
 * uses; LayersSize counts every layer once, however many images share it.
 */
export async function diskUsage(s: Stores): Promise<DiskUsage> {
  const images = await listImages(s, { all: true });
  const layerUsers = new Map<Digest, number>();
  const chainsOf = new Map<Digest, Digest[]>();
  for (const summary of images) {
    const chains = chainIDs((await s.images.get(summary.Id)).config.rootfs.diff_ids);
    chainsOf.set(summary.Id, chains);
    for (const c of chains) layerUsers.set(c, (layerUsers.get(c) ?? 0) + 1);
  }
  let layersSize = 0;
  for (const c of layerUsers.keys()) layersSize += (await s.layers.get(c)).size;
  for (const summary of images) {
    let shared = 0;
    for (const c of chainsOf.get(summary.Id)!) if (layerUsers.get(c)! > 1) shared += (await s.layers.get(c)).size;
    summary.SharedSize = shared;
  }
  return {
    LayersSize: layersSize,
    Images: images,
    Containers: await listContainers(s, { all: true, size: true }),
    Volumes: await volumesUsage(s),
    BuildCache: [],
  };
}
