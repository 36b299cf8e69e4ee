import type { Readable } from 'node:stream';
import type { Stores } from '../stores.js';
import { decompress } from '../archive/compression.js';
import { applyConfigChanges } from './config-changes.js';
import { parseTagTarget, tagImage } from './tag-image.js';
import { ociArch } from '../system/system-info.js';
import type { Image } from './image-store.js';
import { publishImage, releaseUnpublished } from './publish-image.js';

export interface ImportOptions {
  /** `repo[:tag]` for the new image. */
  reference?: string;
  message?: string;
  changes?: string[];
}

/** `docker import`: a root filesystem tar (plain, gzip or zstd) becomes a one-layer image. */
export async function importImage(s: Stores, source: Readable, opts: ImportOptions = {}): Promise<Image> {
  if (opts.reference !== undefined) parseTagTarget(opts.reference);
  const { stream } = await decompress(source);
  const layer = await s.layers.register(stream, null);
  const now = new Date().toISOString();
  const config = {
    architecture: ociArch(),
    os: 'linux',
    created: now,
    config: applyConfigChanges({}, opts.changes ?? []),
    rootfs: { type: 'layers', diff_ids: [layer.diffID] },
    history: [{ created: now, created_by: '', comment: opts.message ?? 'Imported from -' }],
  };
  try {
    const reference = opts.reference;
    return await publishImage(s, Buffer.from(JSON.stringify(config)), {
      named: reference === undefined ? undefined : (image) => tagImage(s, image.id, reference),
    });
  } catch (e) {
    await releaseUnpublished(s, [layer.chainID]);
    throw e;
  }
}
