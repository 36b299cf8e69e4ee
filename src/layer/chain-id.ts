import { sha256, type Digest } from '../util/digest.js';

/** Docker's ChainID: the diffID for a base layer, else sha256("<parent chainID> <diffID>"). */
export function chainID(parent: Digest | null, diffID: Digest): Digest {
  return parent === null ? diffID : sha256(`${parent} ${diffID}`);
}

/** Chain ids of every prefix of a diffID list: element i identifies layers 0..i. */
export function chainIDs(diffIDs: readonly Digest[]): Digest[] {
  const out: Digest[] = [];
  let parent: Digest | null = null;
  for (const d of diffIDs) {
    parent = chainID(parent, d);
    out.push(parent);
  }
  return out;
}
