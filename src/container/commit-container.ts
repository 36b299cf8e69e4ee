import type { Stores } from '../stores.js';
import { notFound } from '../errors.js';
import { imageTopLayer } from '../image/image-layers.js';
import { applyConfigChanges } from '../image/config-changes.js';
import { parseTagTarget, tagImage } from '../image/tag-image.js';
import type { Image } from '../image/image-store.js';
import { publishImage, releaseUnpublished } from '../image/publish-image.js';

export interface CommitOptions {
  /** `repo[:tag]` to tag the new image with. */
  reference?: string;
  message?: string;
  author?: string;
  /** Dockerfile instructions applied to the config (`-c`). */
  changes?: string[];
}

/**
 * A new image from a container: its own changes (init layer excluded) become one layer on top of the
 * image's layers. Deleted files become whiteouts, so the lower layers, and the image, never shrink.
 */
export async function commitContainer(s: Stores, idOrName: string, opts: CommitOptions = {}): Promise<Image> {
  if (opts.reference !== undefined) parseTagTarget(opts.reference);
  const c = await s.containers.resolve(idOrName);
  const mount = await s.layers.getMount(c.ID);
  const base = await s.images.get(c.Image);
  let layer;
  try {
    layer = await s.layers.register(await s.layers.diff(mount), imageTopLayer(base));
  } catch (e) {
    // Another process removed the container (its layers go first) while its changes were read: say so, not
    // which file went missing.
    if (!(await s.layers.getMount(c.ID).then(() => true, () => false))) throw notFound(`No such container: ${idOrName} (it was removed while being committed)`, e);
    throw e;
  }
  const now = new Date().toISOString();
  const { Hostname: _h, Image: _i, ...containerConfig } = c.Config;
  const config = {
    ...base.config,
    created: now,
    author: opts.author ?? '',
    config: applyConfigChanges(containerConfig, opts.changes ?? []),
    container: c.ID,
    rootfs: { type: 'layers', diff_ids: [...base.config.rootfs.diff_ids, layer.diffID] },
    history: [
      ...(base.config.history ?? []),
      {
        created: now,
        created_by: [...(c.Config.Entrypoint ?? []), ...(c.Config.Cmd ?? [])].join(' '),
        ...(opts.author ? { author: opts.author } : {}),
        ...(opts.message ? { comment: opts.message } : {}),
      },
    ],
  };
  try {
    const reference = opts.reference;
    return await publishImage(s, Buffer.from(JSON.stringify(config)), {
      parent: base.id,
      named: reference === undefined ? undefined : (image) => tagImage(s, image.id, reference),
    });
  } catch (e) {
    await releaseUnpublished(s, [layer.chainID]);
    throw e;
  }
}
