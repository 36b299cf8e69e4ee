import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fsp from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { native } from '../../src/native/native.js';
import { openUnion } from '../../src/union/open-union.js';
import type { UnionFs } from '../../src/union/union-fs.js';
import { unmountUnder } from '../fixtures/unmount.js';
import { isRoot, requireCap } from '../helpers/caps.js';

/**
 * Differential test: the same random operations on a kernel overlayfs mount and on the userspace union
 * over the same lower branches; after every step the visible trees and the error codes must agree.
 * Where strata deliberately differs (renaming a lower or merged directory: the kernel, without
 * redirect_dir, answers EXDEV; strata copies the tree up), the kernel side does what `mv` does on EXDEV
 * (copy, then remove), which is strata's documented behaviour.
 */
const SEQUENCES = Number(process.env.UNION_DIFF_SEQUENCES ?? 24);
const OPS = 30;
const BASE_SEED = 0x5eed;

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const NAMES = ['a', 'b', 'c'];
const POOL: string[] = [];
for (const x of NAMES) {
  POOL.push(x);
  for (const y of NAMES) {
    POOL.push(`${x}/${y}`);
    for (const z of NAMES) POOL.push(`${x}/${y}/${z}`);
  }
}
const MODES = [0o644, 0o600, 0o755, 0o4755];
const IDS = [0, 1000];

type Op =
  | { op: 'write' | 'append'; p: string; data: string }
  | { op: 'truncate'; p: string; len: number }
  | { op: 'mkdir' | 'rmdir' | 'unlink'; p: string }
  | { op: 'rename' | 'link'; p: string; q: string }
  | { op: 'symlink'; target: string; p: string }
  | { op: 'chmod'; p: string; mode: number }
  | { op: 'chown'; p: string; uid: number; gid: number }
  | { op: 'utimes'; p: string; t: number };

function pick<T>(r: () => number, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)]!;
}

function relTarget(r: () => number, from: string): string {
  return posix.relative(posix.dirname('/' + from), '/' + pick(r, POOL)) || '.';
}

function genOp(r: () => number): Op {
  const p = pick(r, POOL);
  const kinds = ['write', 'append', 'truncate', 'mkdir', 'mkdir', 'rmdir', 'unlink', 'rename', 'rename', 'symlink', 'link', 'chmod', 'chown', 'utimes'] as const;
  const k = pick(r, kinds);
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

/** A random lower branch: files, directories and relative symlinks on the shared name pool. */
async function genBranch(r: () => number, dir: string): Promise<void> {
  await fsp.mkdir(dir);
  const count = 1 + Math.floor(r() * 12);
  for (let i = 0; i < count; i++) {
    const rel = pick(r, POOL);
    const host = join(dir, rel);
    try {
      await fsp.mkdir(posix.dirname(host), { recursive: true });
      const kind = r();
      if (kind < 0.5) {
        await fsp.writeFile(host, `${rel}@${Math.floor(r() * 1e4)}`, { flag: 'wx' });
        await fsp.chmod(host, pick(r, MODES));
        await fsp.lchown(host, pick(r, IDS), pick(r, IDS));
        await fsp.utimes(host, 1_000_000, 1_000_000 + Math.floor(r() * 1000));
      } else if (kind < 0.8) {
        await fsp.mkdir(host);
        await fsp.chmod(host, pick(r, [0o755, 0o700]));
      } else {
        await fsp.symlink(relTarget(r, rel), host);
      }
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (!['EEXIST', 'ENOTDIR', 'ENOENT', 'ELOOP'].includes(code ?? '')) throw e;
    }
  }
}

async function codeOf(fn: () => Promise<unknown>): Promise<string> {
  try {
    await fn();
    return 'OK';
  } catch (e) {
    const code = (e as { code?: string }).code;
    if (typeof code !== 'string') throw e;
    return code;
  }
}

interface FsLike {
  lstat(p: string): Promise<import('node:fs').Stats>;
  readdir(p: string): Promise<string[]>;
  readFile(p: string): Promise<Buffer | string>;
  readlink(p: string): Promise<string>;
}

/** The visible tree as comparable lines: type, mode, owner, content or link target, fixed mtimes. */
async function snapshot(fs: FsLike, at: (p: string) => string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const n of (await fs.readdir(at(rel))).sort()) {
      const r = rel === '' ? n : `${rel}/${n}`;
      const st = await fs.lstat(at(r));
      let line = `${r} ${st.mode.toString(8)} ${st.uid}:${st.gid}`;
      if (st.isFile()) {
        line += ` ${JSON.stringify((await fs.readFile(at(r))).toString())}`;
        line += st.mtimeMs < 1.5e12 ? ` t=${Math.floor(st.mtimeMs / 1000)}` : ' t=now';
      }
      if (st.isSymbolicLink()) line += ` -> ${await fs.readlink(at(r))}`;
      out.push(line);
      if (st.isDirectory()) await walk(r);
    }
  };
  await walk('');
  return out;
}

async function kernelOp(m: string, o: Op): Promise<void> {
  const P = (x: string) => join(m, x);
  switch (o.op) {
    case 'write':
      return fsp.writeFile(P(o.p), o.data);
    case 'append':
      return fsp.appendFile(P(o.p), o.data);
    case 'truncate':
      return fsp.truncate(P(o.p), o.len);
    case 'mkdir':
      return void (await fsp.mkdir(P(o.p)));
    case 'rmdir':
      return fsp.rmdir(P(o.p));
    case 'unlink':
      return fsp.unlink(P(o.p));
    case 'link':
      return fsp.link(P(o.p), P(o.q));
    case 'symlink':
      return fsp.symlink(o.target, P(o.p));
    case 'chmod':
      return fsp.chmod(P(o.p), o.mode);
    case 'chown':
      return fsp.chown(P(o.p), o.uid, o.gid);
    case 'utimes':
      return fsp.utimes(P(o.p), o.t, o.t);
    case 'rename':
      try {
        return await fsp.rename(P(o.p), P(o.q));
      } catch (e) {
        if ((e as { code?: string }).code !== 'EXDEV') throw e;
        // What mv does on EXDEV: a non-empty directory target refuses; else copy the tree, then remove the source.
        const dst = await fsp.lstat(P(o.q)).catch(() => null);
        if (dst !== null && !dst.isDirectory()) throw Object.assign(new Error('ENOTDIR'), { code: 'ENOTDIR' });
        if (dst !== null && (await fsp.readdir(P(o.q))).length > 0) throw Object.assign(new Error('ENOTEMPTY'), { code: 'ENOTEMPTY' });
        if (dst !== null) await fsp.rmdir(P(o.q));
        execFileSync('cp', ['-a', '--no-target-directory', P(o.p), P(o.q)]);
        await fsp.rm(P(o.p), { recursive: true });
      }
  }
}

async function unionOp(u: UnionFs, o: Op): Promise<void> {
  const P = (x: string) => '/' + x;
  switch (o.op) {
    case 'write':
      return u.writeFile(P(o.p), o.data);
    case 'append':
      return u.appendFile(P(o.p), o.data);
    case 'truncate':
      return u.truncate(P(o.p), o.len);
    case 'mkdir':
      return void (await u.mkdir(P(o.p)));
    case 'rmdir':
      return u.rmdir(P(o.p));
    case 'unlink':
      return u.unlink(P(o.p));
    case 'link':
      return u.link(P(o.p), P(o.q));
    case 'symlink':
      return u.symlink(o.target, P(o.p));
    case 'chmod':
      return u.chmod(P(o.p), o.mode);
    case 'chown':
      return u.chown(P(o.p), o.uid, o.gid);
    case 'utimes':
      return u.utimes(P(o.p), o.t, o.t);
    case 'rename':
      return u.rename(P(o.p), P(o.q));
  }
}

/** Run one sequence; returns null when both sides agree throughout, else a description of the first divergence. */
async function runSequence(tmp: string, seed: number): Promise<string | null> {
  const r = rng(seed);
  const dir = await fsp.mkdtemp(join(tmp, `s${seed}-`));
  try {
    const nLower = 1 + Math.floor(r() * 10);
    const lowers: string[] = [];
    for (let i = 0; i < nLower; i++) {
      lowers.push(join(dir, `l${i}`));
      await genBranch(r, lowers[i]!);
    }
    const [ku, kw, km, uu] = ['ku', 'kw', 'km', 'uu'].map((x) => join(dir, x)) as [string, string, string, string];
    for (const d of [ku, kw, km, uu]) await fsp.mkdir(d);
    native.mount('overlay', km, 'overlay', 0, `lowerdir=${lowers.join(':')},upperdir=${ku},workdir=${kw},redirect_dir=off,index=off,metacopy=off`);
    try {
      const u = await openUnion([{ path: uu, mode: 'rw' }, ...lowers.map((path) => ({ path, mode: 'ro' as const }))]);
      const ops: Op[] = [];
      const kfs: FsLike = fsp as unknown as FsLike;
      const ufs: FsLike = u as unknown as FsLike;
      const before = [await snapshot(kfs, (p) => join(km, p)), await snapshot(ufs, (p) => '/' + p)];
      if (JSON.stringify(before[0]) !== JSON.stringify(before[1])) return `seed ${seed}: initial trees differ\nkernel: ${before[0]!.join('\n  ')}\nunion:  ${before[1]!.join('\n  ')}`;
      for (let i = 0; i < OPS; i++) {
        const o = genOp(r);
        ops.push(o);
        const kc = await codeOf(() => kernelOp(km, o));
        const uc = await codeOf(() => unionOp(u, o));
        const ks = await snapshot(kfs, (p) => join(km, p));
        const us = await snapshot(ufs, (p) => '/' + p);
        if (kc !== uc || JSON.stringify(ks) !== JSON.stringify(us)) {
          const onlyK = ks.filter((l) => !us.includes(l));
          const onlyU = us.filter((l) => !ks.includes(l));
          return [
            `seed ${seed}, ${nLower} lower branches, diverged at step ${i + 1}: kernel ${kc}, union ${uc}`,
            `shortest failing prefix: ${ops.map((x) => JSON.stringify(x)).join('\n  ')}`,
            `only in kernel: ${onlyK.join(' | ')}`,
            `only in union:  ${onlyU.join(' | ')}`,
          ].join('\n');
        }
      }
      return null;
    } finally {
      native.umount(km, 0);
    }
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

test('userspace union matches kernel overlayfs on random operation sequences', { timeout: Number(process.env.UNION_DIFF_TIMEOUT ?? 120_000) }, async (t) => {
  if (!requireCap(t, 'root (kernel overlayfs mount)', isRoot)) return;
  const tmp = await fsp.mkdtemp(join(tmpdir(), 'strata-union-diff-'));
  try {
    const failures: string[] = [];
    for (let s = 0; s < SEQUENCES && failures.length < 3; s++) {
      const f = await runSequence(tmp, BASE_SEED + s);
      if (f !== null) {
        failures.push(f);
        t.diagnostic(f);
      }
    }
    assert.equal(failures.length, 0, failures.join('\n\n'));
  } finally {
    unmountUnder(tmp);
    await fsp.rm(tmp, { recursive: true, force: true });
  }
});
