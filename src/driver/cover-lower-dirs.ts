import { chmodSync, lchownSync, readdirSync, type BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { native } from '../native/native.js';
import { lookupInLowers } from '../archive/changes.js';
import type { WhiteoutForm } from '../archive/whiteout-form.js';

const NS = 1_000_000_000n;

/** Lower sets remembered, each with what its paths are: every container of an image asks the same few. */
const REMEMBERED_SETS = 32;
const remembered = new Map<string, Map<string, BigIntStats | undefined>>();

/** What `rel` is in the merged lowers, asked of the disk once per lower set (committed layers never change). */
function lowerEntry(lowers: readonly string[], rel: string, form: WhiteoutForm): BigIntStats | undefined {
  const key = lowers.join(':');
  let paths = remembered.get(key);
  if (paths === undefined) {
    paths = new Map();
    remembered.set(key, paths);
    if (remembered.size > REMEMBERED_SETS) remembered.delete(remembered.keys().next().value!);
  }
  if (!paths.has(rel)) paths.set(rel, lookupInLowers(lowers, rel, form));
  return paths.get(rel);
}

/**
 * Directories made in `upper` take the attributes of the directory each covers in the lowers (whose
 * whiteouts are in `form`), if any: what a copy-up through a mount would have given them, for a layer
 * filled by writing straight into its upper directory. The lowers are committed layers (an image's, below
 * a container's init layer), so what they hold at a path is looked up once per process.
 */
export function coverLowerDirs(upper: string, lowers: readonly string[], form: WhiteoutForm): void {
  const walk = (rel: string): void => {
    for (const e of readdirSync(join(upper, rel), { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const r = rel === '' ? e.name : `${rel}/${e.name}`;
      walk(r);
      const below = lowerEntry(lowers, r, form);
      if (!below?.isDirectory()) continue;
      const path = join(upper, r);
      lchownSync(path, Number(below.uid), Number(below.gid));
      chmodSync(path, Number(below.mode & 0o7777n));
      native.lutimes(path, Number(below.atimeNs / NS), Number(below.atimeNs % NS), Number(below.mtimeNs / NS), Number(below.mtimeNs % NS));
    }
  };
  walk('');
}
