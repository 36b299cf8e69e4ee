import { readdirSync, type Dirent } from 'node:fs';
import { isErrno } from '../errors.js';

export const WH_PREFIX = '.wh.';
export const WH_OPAQUE = '.wh..wh..opq';

export type EntryKind = 'dir' | 'file' | 'symlink' | 'other';

/** The visible entry of one name across the read-only branches. */
export interface LowerEntry {
  /** The topmost branch holding the name (an index into the union's branch list). */
  branch: number;
  kind: EntryKind;
  /** For a directory: every branch whose directory merges into it, topmost first. */
  dirBranches: number[];
}

export type LowerDir = ReadonlyMap<string, LowerEntry>;

/**
 * The merged view of the read-only branches, one directory at a time, built lazily (synchronous
 * readdir) and kept: a lookup reads one map per path component whatever the number of branches (the
 * branches read once per directory). The branches must not change while the union is open, as for
 * overlayfs' lowers.
 */
export class LowerIndex {
  private readonly dirs = new Map<string, LowerDir>();

  constructor(
    private readonly paths: readonly string[],
    /** Indices of the read-only branches, topmost first. */
    private readonly lowers: readonly number[],
  ) {}

  /** The merged listing of the lower directory `rel` ('' = root); `rel` must be a visible lower directory. */
  dir(rel: string): LowerDir {
    let d = this.dirs.get(rel);
    if (d === undefined) {
      d = this.build(rel);
      this.dirs.set(rel, d);
    }
    return d;
  }

  private branchesOf(rel: string): number[] {
    if (rel === '') return [...this.lowers];
    const slash = rel.lastIndexOf('/');
    const parent = this.dir(slash < 0 ? '' : rel.slice(0, slash));
    const e = parent.get(rel.slice(slash + 1));
    return e?.kind === 'dir' ? e.dirBranches : [];
  }

  private build(rel: string): LowerDir {
    const out = new Map<string, LowerEntry>();
    // Names a higher branch settled: a whiteout, a non-directory, or a directory whose merge a non-directory ended.
    const closed = new Set<string>();
    for (const b of this.branchesOf(rel)) {
      const host = rel === '' ? this.paths[b]! : `${this.paths[b]}/${rel}`;
      let ents: Dirent[];
      try {
        ents = readdirSync(host, { withFileTypes: true });
      } catch (e) {
        if (isErrno(e, 'ENOENT') || isErrno(e, 'ENOTDIR')) continue;
        throw e;
      }
      let opaque = false;
      const whiteouts: string[] = [];
      for (const d of ents) {
        if (d.name.startsWith(WH_PREFIX)) {
          if (d.name === WH_OPAQUE) opaque = true;
          else if (!d.name.startsWith(WH_PREFIX + WH_PREFIX)) whiteouts.push(d.name.slice(WH_PREFIX.length));
          continue;
        }
        if (closed.has(d.name)) continue;
        const kind: EntryKind = d.isDirectory() ? 'dir' : d.isFile() ? 'file' : d.isSymbolicLink() ? 'symlink' : 'other';
        const prev = out.get(d.name);
        if (prev === undefined) {
          out.set(d.name, { branch: b, kind, dirBranches: kind === 'dir' ? [b] : [] });
          if (kind !== 'dir') closed.add(d.name);
        } else if (kind === 'dir') {
          prev.dirBranches.push(b);
        } else {
          closed.add(d.name);
        }
      }
      for (const w of whiteouts) closed.add(w);
      if (opaque) break;
    }
    return out;
  }
}
