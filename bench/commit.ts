import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { attempt } from './attempt.js';
import { BENCH_TAG, type BenchContext } from './context.js';
import type { WorkloadResult } from './report.js';
import { settle } from './settle.js';
import { median, timeMs } from './stats.js';

const DIRS = 10;

/** Two populated directories of each bench image, deleted by the change. */
const DELETED: Record<string, [string, string]> = {
  realistic: ['/usr/share/zoneinfo', '/usr/share/locale'],
  debian: ['/usr/share/zoneinfo', '/usr/share/locale'],
  busybox: ['/home', '/var'],
};

/** File i's size: spread over 1-4 KiB, the same on both sides. */
const fileSize = (i: number) => 1024 + ((i * 7919) % 3073);

/** The change, made through strata's merged mount with node fs: `files` new files in /bench/d0..d9, two directories removed. */
async function writeChange(root: string, files: number, deleted: readonly string[]): Promise<void> {
  for (let d = 0; d < DIRS; d++) await mkdir(join(root, 'bench', `d${d}`), { recursive: true });
  for (let i = 0; i < files; i++) await writeFile(join(root, 'bench', `d${i % DIRS}`, `f${i}`), randomBytes(fileSize(i)));
  for (const d of deleted) await rm(join(root, d), { recursive: true });
}

/** The same change as a POSIX shell script (dash or busybox ash) for `docker run`. */
function changeScript(files: number, deleted: readonly string[]): string {
  return [
    'set -e',
    `d=0; while [ $d -lt ${DIRS} ]; do mkdir -p /bench/d$d; d=$((d+1)); done`,
    `i=0; while [ $i -lt ${files} ]; do head -c $((1024 + (i * 7919) % 3073)) /dev/urandom > /bench/d$((i % ${DIRS}))/f$i; i=$((i+1)); done`,
    `rm -rf ${deleted.join(' ')}`,
  ].join('\n');
}

/**
 * W4 commit: a container that added `files` small files and deleted two directories becomes an image.
 * strata: create, mount, write with node fs, unmount, then only engine.commit() is timed. docker: the
 * change is made by `docker run --network none`, then only POST /commit is timed. A fresh container
 * per repetition, so every commit makes a new layer; each timed commit starts settled (settle.ts). Each side
 * first commits once more, outside the median: a long-running engine (dockerd, strata's daemon) commits with
 * its code warm, and strata's first commit in a process also pays V8 compiling the code it runs.
 */
export async function commitWorkload(ctx: BenchContext): Promise<WorkloadResult> {
  const files = ctx.opts.files;
  const deleted = DELETED[ctx.opts.image]!;
  const errors: string[] = [];

  const strataMs = await attempt('strata', errors, async () => {
    const { engine } = await ctx.strata();
    const times: number[] = [];
    for (let rep = 0; rep <= ctx.opts.reps; rep++) {
      const c = await engine.create({ image: BENCH_TAG, name: `bench-commit-${rep}` });
      const root = await engine.mount(c.ID);
      try {
        for (const d of deleted) if (!existsSync(join(root, d))) throw new Error(`${d} is not in the image`);
        await writeChange(root, files, deleted);
      } finally {
        await engine.unmount(c.ID);
      }
      await settle();
      times.push(await timeMs(() => engine.commit(c.ID, { reference: `strata-bench/commit:${rep}` })));
    }
    return times;
  });

  const dockerMs = await attempt('docker', errors, async () => {
    const { dockerd, api } = await ctx.docker();
    const times: number[] = [];
    for (let rep = 0; rep <= ctx.opts.reps; rep++) {
      const name = `bench-commit-${rep}`;
      const r = await dockerd.docker(['run', '--network', 'none', '--name', name, BENCH_TAG, 'sh', '-c', changeScript(files, deleted)]);
      if (r.code !== 0) throw new Error(`docker run failed: ${r.stderr.trim()}`);
      const q = new URLSearchParams({ container: name, repo: 'strata-bench/commit', tag: String(rep) });
      await settle();
      times.push(await timeMs(() => api.call('POST', `/commit?${q}`, {})));
    }
    return times;
  });

  // The first run of each side is its warm-up.
  const timed = (xs: number[] | null) => xs && xs.slice(1);
  const runs = (xs: number[] | null) => (xs ? xs.map(Math.round).join(', ') : 'failed');
  return {
    name: 'commit',
    rows: [
      {
        workload: 'commit',
        metric: `+${files} files, -2 dirs`,
        unit: 'ms',
        strata: strataMs && median(timed(strataMs)!),
        peerName: 'dockerd POST /commit',
        peer: dockerMs && median(timed(dockerMs)!),
        goal: { kind: 'ratio', max: 0.5 },
      },
    ],
    notes: [
      `change: ${files} files of 1-4 KiB in /bench/d0..d${DIRS - 1}, deleted ${deleted.join(' and ')}; a fresh container per run`,
      `runs (ms), the first a warm-up outside the median: strata ${runs(strataMs)}; docker ${runs(dockerMs)}`,
    ],
    errors,
  };
}
