import { lstatSync, readdirSync, type BigIntStats } from 'node:fs';
import type { Change } from '../driver/driver.js';
import { native } from '../native/native.js';
import { overlayForm, type WhiteoutForm } from './whiteout-form.js';

export type { Change };

/*
 * `docker diff` semantics (go-archive changes.go): a path changed when mode, uid, gid or rdev differ, for
 * non-directories also mtime or size, or its security.capability differs; a directory never counts as
 * changed for mtime/size alone, but every directory holding a change is reported C. Everything under an
 * added directory is reported A; only the top of a deleted subtree is reported D. Sorted by path.
 */

/** Naive: compare a layer's full tree with its parent's full tree (parent null = empty). */
export async function changesDirs(layerRoot: string, parentRoot: string | null): Promise<Change[]> {
  const out: Change[] = [];
  compareDirs('', layerRoot, parentRoot, out);
  return sorted(out);
}

/**
 * Native: walk only the upper (layer) dir; its whiteouts (in `form`: overlay's char 0:0 devices by
 * default, or AUFS's `.wh.` files) are deletions, an opaque directory deletes its lower children.
 * `parent` is the parent's merged view: one root (e.g. a mounted parent), or its layer dirs topmost
 * first (with their own whiteouts in the same form), or null when there is no parent.
 */
export async function changesOverlay(upperDir: string, parent: string | readonly string[] | null, form: WhiteoutForm = overlayForm): Promise<Change[]> {
  const out: Change[] = [];
  const layers = parent === null ? [] : typeof parent === 'string' ? [parent] : [...parent];
  walkUpper('', upperDir, layers, false, out, form);
  return sorted(out);
}

function sorted(changes: Change[]): Change[] {
  return changes.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

const lstat = (path: string): BigIntStats | undefined => {
  try {
    return lstatSync(path, { bigint: true, throwIfNoEntry: false });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOTDIR') return undefined;
    throw e;
  }
};

/** Returns whether anything under `rel` changed. */
function compareDirs(rel: string, newDir: string, oldDir: string | null, out: Change[]): boolean {
  const oldNames = new Set(oldDir === null ? [] : readdirSync(oldDir));
  let changed = false;
  for (const name of readdirSync(newDir)) {
    const path = `${rel}/${name}`;
    const newPath = `${newDir}/${name}`;
    const n = lstatSync(newPath, { bigint: true });
    const oldPath = oldDir === null ? null : `${oldDir}/${name}`;
    const o = oldPath !== null && oldNames.delete(name) ? lstat(oldPath) : undefined;
    if (o === undefined) {
      addAll(path, newPath, n, out);
      changed = true;
      continue;
    }
    const differs = statDifferent(o, n, oldPath!, newPath);
    let inner = n.isDirectory() ? compareDirs(path, newPath, o.isDirectory() ? oldPath : null, out) : false;
    if (o.isDirectory() && !n.isDirectory()) inner = deleteAll(path, oldPath!, out);
    if (differs || inner) {
      out.push({ path, kind: 'C' });
      changed = true;
    }
  }
  for (const name of oldNames) out.push({ path: `${rel}/${name}`, kind: 'D' });
  return changed || oldNames.size > 0;
}

function addAll(path: string, host: string, st: BigIntStats, out: Change[]): void {
  out.push({ path, kind: 'A' });
  if (!st.isDirectory()) return;
  for (const name of readdirSync(host)) addAll(`${path}/${name}`, `${host}/${name}`, lstatSync(`${host}/${name}`, { bigint: true }), out);
}

/** A directory replaced by a non-directory: its old children are gone. */
function deleteAll(path: string, oldDir: string, out: Change[]): boolean {
  const names = readdirSync(oldDir);
  for (const name of names) out.push({ path: `${path}/${name}`, kind: 'D' });
  return names.length > 0;
}

/**
 * One upper directory against the parent's merged view of the same path: `lower` holds, per parent layer,
 * the directory at this path, or null where the layer has none or an upper layer hides it. Under an opaque
 * directory (`hidden`) what the parent has and the upper dir lacks is deleted. Fills `present` with the
 * names the directory shows or deletes itself.
 */
function walkUpper(rel: string, upper: string, lower: Array<string | null>, hidden: boolean, out: Change[], form: WhiteoutForm, present = new Set<string>()): boolean {
  const names = readdirSync(upper);
  const own = new Set(names);
  let changed = false;
  for (const name of names) {
    const host = `${upper}/${name}`;
    const st = lstatSync(host, { bigint: true });
    const deleted = form.deletes(name, st);
    if (deleted !== null) {
      present.add(deleted);
      // An AUFS whiteout beside a name the layer also holds only hides what is below: the name shows as changed, not deleted.
      if (deleted !== '' && (deleted === name || !own.has(deleted)) && mergedChild(lower, deleted, form) !== null) {
        out.push({ path: `${rel}/${deleted}`, kind: 'D' });
        changed = true;
      }
      continue;
    }
    present.add(name);
    const path = `${rel}/${name}`;
    const below = mergedChild(lower, name, form);
    if (below === null) {
      addUpper(path, name, host, st, out, form);
      changed = true;
      continue;
    }
    if (!st.isDirectory()) {
      // Present in the upper dir means copied up: something was written, as overlay2's Changes counts it.
      out.push({ path, kind: 'C' });
      if (below.st.isDirectory()) deleteMerged(path, below.dirs, new Set(), out, form);
      changed = true;
      continue;
    }
    const opaque = hidden || form.opaque(host);
    const kept = new Set<string>();
    let inner = walkUpper(path, host, below.dirs, opaque, out, form, kept);
    if (opaque && below.st.isDirectory()) inner = deleteMerged(path, below.dirs, kept, out, form) || inner;
    if (inner || statDifferent(below.st, st, null, host)) {
      out.push({ path, kind: 'C' });
      changed = true;
    }
  }
  return changed;
}

/** Everything under an added upper path is added (whiteouts there hide nothing). */
function addUpper(path: string, name: string, host: string, st: BigIntStats, out: Change[], form: WhiteoutForm): void {
  if (form.deletes(name, st) !== null) return;
  out.push({ path, kind: 'A' });
  if (!st.isDirectory()) return;
  for (const n of readdirSync(host)) addUpper(`${path}/${n}`, n, `${host}/${n}`, lstatSync(`${host}/${n}`, { bigint: true }), out, form);
}

/** The parent's children of a directory the upper layer hid (opaque) or replaced, except names in `keep`. */
function deleteMerged(path: string, dirs: Array<string | null>, keep: Set<string>, out: Change[], form: WhiteoutForm): boolean {
  const names = new Set<string>();
  for (const d of dirs) if (d !== null) for (const n of readdirSync(d)) names.add(n);
  let any = false;
  for (const name of names) {
    if (keep.has(name) || mergedChild(dirs, name, form) === null) continue;
    out.push({ path: `${path}/${name}`, kind: 'D' });
    any = true;
  }
  return any;
}

/**
 * What a union of `lowers` (topmost first) shows at `rel` (no leading `/`), honouring their whiteouts
 * and opaque directories in `form`, without mounting them; undefined when nothing is there.
 */
export function lookupInLowers(lowers: readonly string[], rel: string, form: WhiteoutForm = overlayForm): BigIntStats | undefined {
  let dirs: Array<string | null> = [...lowers];
  let found: BigIntStats | undefined;
  for (const name of rel.split('/').filter(Boolean)) {
    if (found !== undefined && !found.isDirectory()) return undefined;
    const child = mergedChild(dirs, name, form);
    if (child === null) return undefined;
    found = child.st;
    dirs = child.dirs;
  }
  return found;
}

/**
 * The topmost entry for `name` in layer directories `dirs` (topmost first; null where a layer has no
 * such directory) and, if it is a directory, that directory per layer (null where hidden or absent).
 */
export function mergedChild(dirs: Array<string | null>, name: string, form: WhiteoutForm): { st: BigIntStats; dirs: Array<string | null> } | null {
  let found: BigIntStats | null = null;
  const below: Array<string | null> = dirs.map(() => null);
  for (let i = 0; i < dirs.length; i++) {
    const d = dirs[i];
    if (d === null) continue;
    const host = `${d}/${name}`;
    const st = lstat(host);
    if (st === undefined) {
      if (form.besideWhiteout(d, name)) break;
      continue;
    }
    if (form.deletes(name, st) !== null) break;
    if (found === null) found = st;
    if (!st.isDirectory() || !found.isDirectory()) break;
    below[i] = host;
    if (form.opaque(host) || form.besideWhiteout(d, name)) break;
  }
  return found === null ? null : { st: found, dirs: below };
}

const NS = 1_000_000_000n;

/** Docker's sameFsTime: equal, or the same second when either side lost its nanoseconds (old tars). */
function sameTime(a: bigint, b: bigint): boolean {
  return a === b || (a / NS === b / NS && (a % NS === 0n || b % NS === 0n));
}

function statDifferent(o: BigIntStats, n: BigIntStats, oldPath: string | null, newPath: string): boolean {
  if (o.mode !== n.mode || o.uid !== n.uid || o.gid !== n.gid || o.rdev !== n.rdev) return true;
  if (!n.isDirectory() && (!sameTime(o.mtimeNs, n.mtimeNs) || o.size !== n.size)) return true;
  if (oldPath === null) return false;
  const a = native.lgetxattr(oldPath, 'security.capability');
  const b = native.lgetxattr(newPath, 'security.capability');
  return a === null ? b !== null : b === null || !a.equals(b);
}
