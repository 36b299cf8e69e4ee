import type { Stores } from '../stores.js';
import { chainIDs } from '../layer/chain-id.js';
import { resolveImage } from './resolve-image.js';
import { imageSize, imageTopLayer } from './image-layers.js';

/** `docker image inspect` for one image, with docker's field names. */
export async function inspectImage(s: Stores, refOrId: string) {
  const img = await resolveImage(s, refOrId);
  const names = await s.tags.referencesTo(img.id);
  const top = imageTopLayer(img);
  const graphData = top === null ? {} : await s.driver.metadata((await s.layers.get(top)).cacheID);
  const c = img.config;
  return {
    Id: img.id,
    RepoTags: names.filter((n) => !n.includes('@')),
    RepoDigests: names.filter((n) => n.includes('@')),
    Parent: (await s.images.parent(img.id)) ?? '',
    Comment: c.history?.at(-1)?.comment ?? '',
    Created: c.created ?? '',
    Author: c.author ?? '',
    Config: c.config ?? {},
    Architecture: c.architecture,
    ...(c.variant ? { Variant: c.variant } : {}),
    Os: c.os,
    Size: await imageSize(s, img),
    GraphDriver: { Name: s.driver.name, Data: graphData },
    RootFS: { Type: c.rootfs.type, Layers: c.rootfs.diff_ids },
    Metadata: { LastTagTime: (await s.images.getMeta(img.id, 'lastUpdated')) ?? '' },
  };
}

/** One row of `docker history`, newest first. */
export interface HistoryEntry {
  Id: string;
  Created: number;
  CreatedBy: string;
  Tags: string[];
  Size: number;
  Comment: string;
}

export async function imageHistory(s: Stores, refOrId: string): Promise<HistoryEntry[]> {
  const img = await resolveImage(s, refOrId);
  const chains = chainIDs(img.config.rootfs.diff_ids);
  const history = img.config.history ?? [];
  const rows: HistoryEntry[] = [];
  let layer = 0;
  for (const h of history) {
    const size = h.empty_layer ? 0 : await s.layers.get(chains[layer++]!).then((l) => l.size, () => 0);
    rows.push({ Id: '<missing>', Created: Math.floor(Date.parse(h.created ?? '') / 1000) || 0, CreatedBy: h.created_by ?? '', Tags: [], Size: size, Comment: h.comment ?? '' });
  }
  rows.reverse();
  if (rows.length > 0) {
    rows[0]!.Id = img.id;
    rows[0]!.Tags = (await s.tags.referencesTo(img.id)).filter((n) => !n.includes('@'));
  }
  return rows;
}
