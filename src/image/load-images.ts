import type { Readable } from 'node:stream';
import type { Stores } from '../stores.js';
import type { Digest } from '../util/digest.js';
import { digestHex } from '../util/digest.js';
import { decompress } from '../archive/compression.js';
import { isStrataError } from '../errors.js';
import { chainID } from '../layer/chain-id.js';
import { readImageArchive } from './archive-reader.js';
import { parseTagTarget } from './tag-image.js';
import { tagKey } from './resolve-image.js';
import { publishImage, releaseUnpublished } from './publish-image.js';

/**
 * `docker load`: every image of a docker-save or OCI-layout archive (a tar stream, or a layout directory). Blobs are verified as they are
 * ingested, each layer's content against the config's diff_id, layers already present are reused. On
 * any failure the layers this load added are released again: nothing half-loaded stays visible.
 * Returns docker's lines (`Loaded image: name:tag`, or `Loaded image ID: sha256:...` for untagged ones).
 */
export async function loadImages(s: Stores, source: Readable | { dir: string }): Promise<string[]> {
  const contents = await readImageArchive(source, s.content);
  const added: Digest[] = [];
  const lines: string[] = [];
  try {
    // Validate every name before changing anything.
    for (const img of contents.images) for (const t of img.repoTags) parseTagTarget(t);
    for (const img of contents.images) {
      const config = img.config.parsed;
      const diffIDs = config.rootfs.diff_ids;
      let parent: Digest | null = null;
      for (const [i, blob] of img.layers.entries()) {
        const diffID = diffIDs[i]!;
        const chain = chainID(parent, diffID);
        if (await s.layers.has(chain)) {
          s.events.emit('progress', { id: digestHex(diffID).slice(0, 12), status: 'Already exists' });
        } else {
          s.events.emit('progress', { id: digestHex(diffID).slice(0, 12), status: 'Loading layer' });
          try {
            const { stream } = await decompress(s.content.reader(blob.digest));
            await s.layers.register(stream, parent, diffID);
            added.push(chain);
          } catch (e) {
            // Another process loading the same archive found the blob first, registered the layer and dropped
            // the blob before this one could read it: the layer is there, which is all this load needed.
            if (!isStrataError(e, 'ErrNotFound') || !(await s.layers.has(chain))) throw e;
          }
        }
        parent = chain;
      }
      const image = await publishImage(s, img.config.raw, {
        named: async (image) => {
          for (const t of img.repoTags) {
            const [repo, key] = tagKey(parseTagTarget(t));
            const before = await s.tags.set(repo, key, image.id);
            if (before !== undefined) lines.push(`The image ${key} already exists, renaming the old one with ID ${before} to empty string`);
            lines.push(`Loaded image: ${key}`);
          }
        },
      });
      if (img.repoTags.length === 0) lines.push(`Loaded image ID: ${image.id}`);
    }
  } catch (e) {
    await releaseUnpublished(s, added.reverse());
    throw e;
  } finally {
    // Compressed layer blobs were only a vehicle: the layers hold the data now.
    for (const d of contents.blobsIngested) await s.content.delete(d).catch(() => undefined);
  }
  return lines;
}
