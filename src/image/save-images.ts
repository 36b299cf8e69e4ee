import type { Readable } from 'node:stream';
import type { Stores } from '../stores.js';
import { chainIDs } from '../layer/chain-id.js';
import { resolveImage, tagKey } from './resolve-image.js';
import { parseReference, withDefaultTag } from './reference.js';
import { writeImageArchive, writeImageLayoutDir, type SaveImage } from './archive-writer.js';

export type SaveFormat = 'docker' | 'oci';

/**
 * `docker save`: the images with their layers as a tar stream. Layer tars are rebuilt byte for byte
 * (and verified against their diffIDs) from the layer store. A name saves that name; an id saves the
 * image with no names, as docker does.
 */
export async function saveImages(s: Stores, refs: string[], format: SaveFormat): Promise<Readable> {
  return writeImageArchive(await saveSet(s, refs), format);
}

/** `save --format oci -o DIR/`: the images as an OCI image-layout directory. */
export async function saveImagesToDir(s: Stores, refs: string[], dir: string): Promise<void> {
  await writeImageLayoutDir(dir, await saveSet(s, refs));
}

/** What to save: each image once, with the names it was asked for by. */
async function saveSet(s: Stores, refs: string[]): Promise<SaveImage[]> {
  const byId = new Map<string, { image: Awaited<ReturnType<typeof resolveImage>>; tags: string[] }>();
  for (const r of refs) {
    const image = await resolveImage(s, r);
    const entry = byId.get(image.id) ?? { image, tags: [] };
    byId.set(image.id, entry);
    let name: string | undefined;
    try {
      const ref = withDefaultTag(parseReference(r));
      if ((await s.tags.get(...tagKey(ref))) === image.id) name = tagKey(ref)[1];
    } catch {
      name = undefined; // an id, not a name
    }
    if (name !== undefined && !name.includes('@') && !entry.tags.includes(name)) entry.tags.push(name);
  }
  return Promise.all(
    [...byId.values()].map(async ({ image, tags }) => {
      const chains = chainIDs(image.config.rootfs.diff_ids);
      const layers = await Promise.all(chains.map((c) => s.layers.get(c)));
      return {
        repoTags: tags,
        config: { raw: image.raw, digest: image.id },
        layers: layers.map((l) => ({ diffID: l.diffID, size: l.tarSize, open: () => s.layers.tarStream(l.chainID) })),
      };
    }),
  );
}
