import type { Stores } from '../stores.js';
import type { Digest } from '../util/digest.js';
import { imageSize } from './image-layers.js';

/** One row of `docker images` / `GET /images/json`. */
export interface ImageSummary {
  Id: Digest;
  ParentId: string;
  RepoTags: string[];
  RepoDigests: string[];
  Created: number;
  Size: number;
  SharedSize: number;
  Containers: number;
  Labels: Record<string, string>;
}

export interface ListImagesOptions {
  /** Also intermediate images (untagged parents of other images). */
  all?: boolean;
  /** `dangling=true` shows only untagged images, `false` only tagged ones. */
  dangling?: boolean;
}

export async function listImages(s: Stores, opts: ListImagesOptions = {}): Promise<ImageSummary[]> {
  const refs = await s.tags.all();
  const containers = await s.containers.list();
  const images = await s.images.list();
  const parents = new Set<Digest>();
  for (const img of images) {
    const p = await s.images.parent(img.id);
    if (p) parents.add(p);
  }
  const out: ImageSummary[] = [];
  for (const img of images) {
    const names = refs.filter(([, , id]) => id === img.id).map(([, ref]) => ref);
    const tags = names.filter((n) => !n.includes('@'));
    const digests = names.filter((n) => n.includes('@'));
    const dangling = names.length === 0;
    // Untagged parents are intermediate layers of tagged images: hidden unless -a, like docker.
    if (dangling && parents.has(img.id) && !opts.all) continue;
    if (opts.dangling === true && !dangling) continue;
    if (opts.dangling === false && dangling) continue;
    out.push({
      Id: img.id,
      ParentId: (await s.images.parent(img.id)) ?? '',
      RepoTags: tags,
      RepoDigests: digests,
      Created: Math.floor(Date.parse(img.config.created ?? '') / 1000) || 0,
      Size: await imageSize(s, img),
      SharedSize: -1,
      Containers: containers.filter((c) => c.Image === img.id).length,
      Labels: img.config.config?.Labels ?? {},
    });
  }
  return out.sort((a, b) => b.Created - a.Created);
}
