import { posix } from 'node:path';
import { pick, rng } from './random.js';

/**
 * A differential sequence, generated from its seed alone: lower branches (1 to 10, topmost first) as
 * abstract entries, and the operations to apply. Operations never depend on outcomes, so any subset
 * of them is again a valid sequence (what the shrinker relies on).
 */
export type Op =
  | { op: 'write' | 'append'; p: string; data: string }
  | { op: 'truncate'; p: string; len: number }
  | { op: 'mkdir' | 'rmdir' | 'unlink'; p: string }
  | { op: 'rename' | 'link'; p: string; q: string }
  | { op: 'symlink'; target: string; p: string }
  | { op: 'chmod'; p: string; mode: number }
  | { op: 'chown'; p: string; uid: number; gid: number }
  | { op: 'utimes'; p: string; t: number };

export type LowerEntry =
  | { kind: 'file'; p: string; data: string; mode: number; uid: number; gid: number; mtime: number }
  | { kind: 'dir'; p: string; mode: number }
  | { kind: 'symlink'; p: string; target: string }
  | { kind: 'hardlink'; p: string; to: string }
  | { kind: 'whiteout'; p: string }
  | { kind: 'opaque'; p: string };

export interface Sequence {
  seed: number;
  lowers: LowerEntry[][];
  ops: Op[];
}

const NAMES = ['a', 'b', 'c'];
/** Every path of depth 1 to 3 over three names: small enough that operations keep colliding. */
export const POOL: readonly string[] = NAMES.flatMap((x) => [x, ...NAMES.flatMap((y) => [`${x}/${y}`, ...NAMES.map((z) => `${x}/${y}/${z}`)])]);
const MODES = [0o644, 0o600, 0o755, 0o4755];
const IDS = [0, 1000];
const OP_KINDS = ['write', 'append', 'truncate', 'mkdir', 'mkdir', 'rmdir', 'unlink', 'rename', 'rename', 'symlink', 'link', 'chmod', 'chown', 'utimes'] as const;

/** A relative target from `from` to a pool path (escapes the root once the link is moved deeper). */
function relTarget(r: () => number, from: string): string {
  return posix.relative(posix.dirname('/' + from), '/' + pick(r, POOL)) || '.';
}

function genOp(r: () => number): Op {
  const p = pick(r, POOL);
  const k = pick(r, OP_KINDS);
  switch (k) {
    case 'write':
    case 'append':
      return { op: k, p, data: Math.floor(r() * 1e6).toString(36) };
    case 'truncate':
      return { op: k, p, len: Math.floor(r() * 8) };
    case 'rename':
    case 'link':
      return { op: k, p, q: pick(r, POOL) };
    case 'symlink':
      return { op: k, target: relTarget(r, p), p };
    case 'chmod':
      return { op: k, p, mode: pick(r, MODES) };
    case 'chown':
      return { op: k, p, uid: pick(r, IDS), gid: pick(r, IDS) };
    case 'utimes':
      return { op: k, p, t: 1_000_000_000 + Math.floor(r() * 1e6) };
    default:
      return { op: k, p };
  }
}

function genEntry(r: () => number): LowerEntry {
  const p = pick(r, POOL);
  const k = r();
  if (k < 0.4) return { kind: 'file', p, data: `${p}@${Math.floor(r() * 1e4)}`, mode: pick(r, MODES), uid: pick(r, IDS), gid: pick(r, IDS), mtime: 1_000_000 + Math.floor(r() * 1000) };
  if (k < 0.65) return { kind: 'dir', p, mode: pick(r, [0o755, 0o700]) };
  if (k < 0.8) return { kind: 'symlink', p, target: relTarget(r, p) };
  if (k < 0.88) return { kind: 'hardlink', p, to: pick(r, POOL) };
  if (k < 0.96) return { kind: 'whiteout', p };
  return { kind: 'opaque', p };
}

/**
 * One lower branch: files, directories, symlinks, hardlinks, whiteouts and opaque markers on the pool.
 * Entries that would collide in the branch (a taken name, a parent that is not a directory, a hardlink
 * to no file) are dropped here, so both on-disk forms of the branch hold exactly the same entries.
 */
function genLower(r: () => number): LowerEntry[] {
  const out: LowerEntry[] = [];
  const taken = new Map<string, LowerEntry['kind'] | 'parent'>();
  const count = 1 + Math.floor(r() * 10);
  for (let i = 0; i < count; i++) {
    const e = genEntry(r);
    const parents = e.p.split('/').slice(0, -1).map((_, j, a) => a.slice(0, j + 1).join('/'));
    if (parents.some((d) => ![undefined, 'dir', 'parent'].includes(taken.get(d)))) continue;
    const had = taken.get(e.p);
    if (e.kind === 'opaque' ? had !== undefined && had !== 'dir' && had !== 'parent' : had !== undefined) continue;
    if (e.kind === 'hardlink' && taken.get(e.to) !== 'file') continue;
    for (const d of parents) if (!taken.has(d)) taken.set(d, 'parent');
    taken.set(e.p, e.kind === 'hardlink' ? 'file' : e.kind === 'opaque' ? (had ?? 'parent') : e.kind);
    out.push(e);
  }
  return out;
}

export function genSequence(seed: number, opCount: number): Sequence {
  const r = rng(seed);
  const lowers = Array.from({ length: 1 + Math.floor(r() * 10) }, () => genLower(r));
  return { seed, lowers, ops: Array.from({ length: opCount }, () => genOp(r)) };
}

export function opText(o: Op): string {
  switch (o.op) {
    case 'write':
    case 'append':
      return `${o.op} /${o.p} ${JSON.stringify(o.data)}`;
    case 'truncate':
      return `truncate /${o.p} ${o.len}`;
    case 'rename':
    case 'link':
      return `${o.op} /${o.p} /${o.q}`;
    case 'symlink':
      return `symlink ${JSON.stringify(o.target)} /${o.p}`;
    case 'chmod':
      return `chmod /${o.p} ${o.mode.toString(8)}`;
    case 'chown':
      return `chown /${o.p} ${o.uid}:${o.gid}`;
    case 'utimes':
      return `utimes /${o.p} ${o.t}`;
    default:
      return `${o.op} /${o.p}`;
  }
}
