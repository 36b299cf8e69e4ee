import type { Stores } from '../stores.js';
import type { Digest } from '../util/digest.js';
import { invalidArgument } from '../errors.js';
import { parseReference, withDefaultTag, type Reference } from './reference.js';
import { tagKey } from './resolve-image.js';

/** A tag target (`repo[:tag]`, latest by default); checked before any work so bad input changes nothing. */
export function parseTagTarget(target: string): Reference {
  const ref = withDefaultTag(parseReference(target));
  if (ref.digest !== undefined) throw invalidArgument(`refusing to create a tag with a digest reference: ${target}`);
  return ref;
}

/** Point `target` at an image; a tag that named another image moves, as in docker. */
export async function tagImage(s: Stores, id: Digest, target: string): Promise<void> {
  await s.tags.set(...tagKey(parseTagTarget(target)), id);
}
