import type { Stores } from '../stores.js';
import type { Digest } from '../util/digest.js';
import { invalidArgument } from '../errors.js';
import { parseReference, withDefaultTag } from './reference.js';
import { tagKey } from './resolve-image.js';

/** Point `target` (`repo[:tag]`) at an image; a tag that named another image moves, as in docker. */
export async function tagImage(s: Stores, id: Digest, target: string): Promise<void> {
  const ref = withDefaultTag(parseReference(target));
  if (ref.digest !== undefined) throw invalidArgument(`refusing to create a tag with a digest reference: ${target}`);
  await s.tags.set(...tagKey(ref), id);
}
