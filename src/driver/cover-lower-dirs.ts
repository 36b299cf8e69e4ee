import { chmodSync, lchownSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { native } from '../native/native.js';
import { lookupInLowers } from '../archive/changes.js';
import type { WhiteoutForm } from '../archive/whiteout-form.js';

const NS = 1_000_000_000n;

/**
 * Directories made in `upper` take the attributes of the directory each covers in the lowers (whose
 * whiteouts are in `form`), if any: what a copy-up through a mount would have given them, for a layer
 * filled by writing straight into its upper directory.
 */
export function coverLowerDirs(upper: string, lowers: readonly string[], form: WhiteoutForm): void {
  const walk = (rel: string): void => {
    for (const e of readdirSync(join(upper, rel), { withFileTypes: true })) {
      if (!e.isDirectory()) continue;
      const r = rel === '' ? e.name : `${rel}/${e.name}`;
      walk(r);
      const below = lookupInLowers(lowers, r, form);
      if (!below?.isDirectory()) continue;
      const path = join(upper, r);
      lchownSync(path, Number(below.uid), Number(below.gid));
      chmodSync(path, Number(below.mode & 0o7777n));
      native.lutimes(path, Number(below.atimeNs / NS), Number(below.atimeNs % NS), Number(below.mtimeNs / NS), Number(below.mtimeNs % NS));
    }
  };
  walk('');
}
