import type { Stores } from '../stores.js';
import type { Digest } from '../util/digest.js';
import { digestHex } from '../util/digest.js';
import { conflict } from '../errors.js';
import type { Image } from './image-store.js';
import { resolveImage, tagKey } from './resolve-image.js';
import { imageTopLayer, imageTops } from './image-layers.js';
import { parseReference, withDefaultTag, type Reference } from './reference.js';

/** One line of `docker rmi` output. */
export type DeleteResponse = { Untagged: string } | { Deleted: string };

const short = (id: Digest) => digestHex(id).slice(0, 12);

async function children(s: Stores, id: Digest): Promise<Digest[]> {
  const out: Digest[] = [];
  for (const other of await s.images.ids()) if ((await s.images.parent(other)) === id) out.push(other);
  return out;
}

/** The tag-store reference `refOrId` names, if it is a name (not an id) present there. */
async function asStoredReference(s: Stores, refOrId: string): Promise<Reference | undefined> {
  let ref: Reference;
  try {
    ref = withDefaultTag(parseReference(refOrId));
  } catch {
    return undefined;
  }
  return (await s.tags.get(...tagKey(ref))) !== undefined ? ref : undefined;
}

/**
 * `docker rmi`: by name, untag, and delete the image once no name is left; by id, delete it with all its
 * names. Refused while a container uses the image unless forced; an image other images build on is
 * never deleted. Layers go with the last image holding them.
 */
export async function removeImage(s: Stores, refOrId: string, opts: { force?: boolean } = {}): Promise<DeleteResponse[]> {
  return s.images.lock(() => removeLocked(s, refOrId, opts));
}

async function removeLocked(s: Stores, refOrId: string, opts: { force?: boolean }): Promise<DeleteResponse[]> {
  const img = await resolveImage(s, refOrId);
  const ref = await asStoredReference(s, refOrId);
  const names = await s.tags.referencesTo(img.id);
  const users = await s.containers.usingImage(img.id);
  const out: DeleteResponse[] = [];
  if (ref !== undefined) {
    const [repo, key] = tagKey(ref);
    if (names.length === 1 && users.length > 0 && !opts.force) {
      throw conflict(`conflict: unable to remove repository reference "${refOrId}" (must force) - container ${short(users[0]!.ID as Digest)} is using its referenced image ${short(img.id)}`);
    }
    await s.tags.delete(repo, key);
    out.push({ Untagged: key });
    if (names.length > 1) return out;
  } else {
    if (names.length > 1 && !opts.force) {
      throw conflict(`conflict: unable to delete ${short(img.id)} (must be forced) - image is referenced in multiple repositories`);
    }
    if (users.length > 0 && !opts.force) {
      throw conflict(`conflict: unable to delete ${short(img.id)} (must be forced) - image is being used by stopped container ${users[0]!.ID.slice(0, 12)}`);
    }
    if ((await children(s, img.id)).length > 0) {
      throw conflict(`conflict: unable to delete ${short(img.id)} (cannot be forced) - image has dependent child images`);
    }
    for (const name of names) {
      const r = withDefaultTag(parseReference(name));
      await s.tags.delete(...tagKey(r));
      out.push({ Untagged: name });
    }
  }
  if ((await children(s, img.id)).length > 0) return out;
  out.push(...(await deleteImage(s, img)).responses);
  return out;
}

/** Delete an untagged image and the layers only it held, then its untagged, unused parents. */
async function deleteImage(s: Stores, img: Image): Promise<{ responses: DeleteResponse[]; reclaimed: number }> {
  const out: DeleteResponse[] = [];
  let reclaimed = 0;
  let current: Image | undefined = img;
  while (current !== undefined) {
    const parentId = await s.images.parent(current.id);
    await s.images.delete(current.id);
    out.push({ Deleted: current.id });
    for (const layer of await s.layers.releaseUnreferenced(imageTopLayer(current), await imageTops(s))) {
      out.push({ Deleted: layer.chainID });
      reclaimed += layer.size;
    }
    current = undefined;
    if (parentId !== undefined) {
      const unused =
        (await s.tags.referencesTo(parentId)).length === 0 &&
        (await children(s, parentId)).length === 0 &&
        (await s.containers.usingImage(parentId)).length === 0;
      if (unused) current = await s.images.get(parentId).catch(() => undefined);
    }
  }
  return { responses: out, reclaimed };
}

/** `docker image prune [-a]`: dangling images (no name), or with `all` every image no container uses. */
export async function pruneImages(s: Stores, opts: { all?: boolean } = {}): Promise<{ ImagesDeleted: DeleteResponse[]; SpaceReclaimed: number }> {
  return s.images.lock(() => pruneLocked(s, opts));
}

async function pruneLocked(s: Stores, opts: { all?: boolean }): Promise<{ ImagesDeleted: DeleteResponse[]; SpaceReclaimed: number }> {
  const deleted: DeleteResponse[] = [];
  let reclaimed = 0;
  for (const img of await s.images.list().catch(() => [])) {
    if (!(await s.images.get(img.id).then(() => true, () => false))) continue; // deleted as a parent meanwhile
    const names = await s.tags.referencesTo(img.id);
    if (!opts.all && names.length > 0) continue;
    if ((await s.containers.usingImage(img.id)).length > 0 || (await children(s, img.id)).length > 0) continue;
    for (const name of names) {
      await s.tags.delete(...tagKey(withDefaultTag(parseReference(name))));
      deleted.push({ Untagged: name });
    }
    const gone = await deleteImage(s, img);
    deleted.push(...gone.responses);
    reclaimed += gone.reclaimed;
  }
  return { ImagesDeleted: deleted, SpaceReclaimed: reclaimed };
}
