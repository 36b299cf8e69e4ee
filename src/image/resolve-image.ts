import type { Stores } from '../stores.js';
import { notFound } from '../errors.js';
import type { Image } from './image-store.js';
import { parseReference, withDefaultTag, familiarName, familiarString, type Reference } from './reference.js';

/** Where a reference lives in the tag store: repository (familiar name) and key (`name:tag` / `name@digest`). */
export function tagKey(ref: Reference): [string, string] {
  return [familiarName(ref), familiarString(ref)];
}

/**
 * An image by reference (`busybox`, `busybox:1`, `name@sha256:...`) or by id (full, `sha256:` prefixed, or
 * a unique prefix), in docker's order: a name in the tag store first, then an id.
 */
export async function resolveImage(s: Stores, refOrId: string): Promise<Image> {
  let ref: Reference | undefined;
  try {
    ref = withDefaultTag(parseReference(refOrId));
  } catch {
    ref = undefined;
  }
  if (ref !== undefined) {
    const id = await s.tags.get(...tagKey(ref));
    if (id !== undefined) return s.images.get(id);
  }
  const id = await s.images.resolveId(refOrId);
  if (id !== undefined) return s.images.get(id);
  if (ref === undefined) parseReference(refOrId); // rethrow the reference error: neither a name nor an id
  throw notFound(`No such image: ${refOrId}`);
}
