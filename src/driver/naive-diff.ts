/**
 * Docker's NaiveDiffDriver: diffs computed by comparing the full views of a layer and its parent,
 * for drivers without a cheaper way (vfs) or when the cheaper way does not apply (overlay2 against a
 * layer that is not the direct parent).
 */
import { Readable } from 'node:stream';
import type { ApplyHooks, Change } from './driver.js';
import { applyLayer } from '../archive/apply-layer.js';
import { changesDirs } from '../archive/changes.js';
import { exportChanges } from '../archive/export-changes.js';
import { changesSize } from './tree-size.js';

/** The part of a driver the generic diff needs: full views of layers, reference counted. */
export interface LayerViews {
  get(id: string): Promise<string>;
  put(id: string): Promise<void>;
}

// Holds the view of `id` (or nothing for null) while fn runs.
async function withView<T>(d: LayerViews, id: string | null, fn: (root: string | null) => Promise<T>): Promise<T> {
  if (id === null) return fn(null);
  const root = await d.get(id);
  try {
    return await fn(root);
  } finally {
    await d.put(id);
  }
}

function changesIn(d: LayerViews, layer: string, parent: string | null): Promise<Change[]> {
  return withView(d, parent, (parentRoot) => changesDirs(layer, parentRoot));
}

export function naiveChanges(d: LayerViews, id: string, parent: string | null): Promise<Change[]> {
  return withView(d, id, (layer) => changesIn(d, layer!, parent));
}

export function naiveDiffSize(d: LayerViews, id: string, parent: string | null): Promise<number> {
  return withView(d, id, async (layer) => changesSize(layer!, await changesIn(d, layer!, parent)));
}

/**
 * The layer tar; the layer stays held until the stream is read to the end (released before the reader sees
 * the end) or destroyed.
 */
export async function naiveDiff(d: LayerViews, id: string, parent: string | null): Promise<Readable> {
  const layer = await d.get(id);
  let tar: Readable;
  try {
    tar = exportChanges(layer, await changesIn(d, layer, parent));
  } catch (e) {
    await d.put(id);
    throw e;
  }
  async function* held(): AsyncGenerator<Buffer> {
    try {
      yield* tar;
    } finally {
      tar.destroy();
      // A failing put must not fail a tar already complete; the mount stays counted until cleanup/remove.
      await d.put(id).catch(() => undefined);
    }
  }
  return Readable.from(held(), { objectMode: false, highWaterMark: 1 << 20 });
}

/** Apply a layer tar through the layer's full view, with whiteouts as plain deletions. */
export function naiveApplyDiff(d: LayerViews, id: string, tar: Readable, hooks?: ApplyHooks): Promise<number> {
  return withView(d, id, async (layer) => {
    const { size } = await applyLayer(layer!, tar, { whiteouts: 'naive', onEntry: hooks?.onEntry, onTrailer: hooks?.onTrailer });
    return size;
  });
}
