import { createReadStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { applyLayer } from '../src/archive/apply-layer.js';
import { decompress } from '../src/archive/compression.js';
import { blobPath, imageInfo } from '../test/fixtures/images.js';
import { compareTrees } from '../test/fixtures/compare-tree.js';
import { runOk } from '../test/fixtures/run.js';
import { attempt, oneLine } from './attempt.js';
import type { BenchContext } from './context.js';
import type { WorkloadResult } from './report.js';
import { settle } from './settle.js';
import { median, timeMs } from './stats.js';

const CHUNK = 1 << 20;

/** strata's applier: the gzip blob streamed through decompress() into applyLayer (naive whiteouts, as tar into a plain dir). */
async function strataExtract(blob: string, dir: string): Promise<void> {
  const { stream } = await decompress(createReadStream(blob, { highWaterMark: CHUNK }));
  await applyLayer(dir, stream, { whiteouts: 'naive' });
}

/** The peer: GNU tar keeping owners, modes and all xattrs, as a careful unpacker must. */
async function tarExtract(blob: string, dir: string): Promise<void> {
  await runOk('tar', ['-xzf', blob, '-C', dir, '--numeric-owner', '--xattrs', "--xattrs-include=*", '-p']);
}

async function readThrough(file: string): Promise<void> {
  for await (const _ of createReadStream(file, { highWaterMark: CHUNK }));
}

/**
 * W6 extract: the image's biggest gzip'd layer blob into an empty directory, strata vs GNU tar,
 * alternating which goes first. Each run starts from a fresh directory on a settled machine (settle.ts), with the blob in
 * the page cache. One untimed run of each first, whose trees must be identical.
 */
export async function extractWorkload(ctx: BenchContext): Promise<WorkloadResult> {
  const img = await ctx.image();
  const { manifest } = await imageInfo(img.layout, img.ref);
  const layer = manifest.layers.reduce((a, b) => (b.size > a.size ? b : a));
  const blob = blobPath(img.layout, layer.digest);
  const work = await ctx.tempDir('extract');
  const notes = [`layer ${layer.digest.slice(0, 19)}…: ${(layer.size / 2 ** 20).toFixed(1)} MiB gzip, the biggest of ${manifest.layers.length}`];

  const errors: string[] = [];
  await readThrough(blob);
  const dirOf = (who: string) => join(work, who);
  await mkdir(dirOf('tar'));
  await tarExtract(blob, dirOf('tar'));
  const du = await runOk('du', ['-sx', '--block-size=1', dirOf('tar')]);
  const entries = await runOk('find', [dirOf('tar'), '-xdev', '-printf', '.']);
  notes.push(`the tree: ${entries.stdout.length} entries, ${(Number(du.stdout.split('\t')[0]) / 2 ** 20).toFixed(1)} MiB on disk (du)`);
  const strataWorks = await attempt('strata warm-up extract', errors, async () => {
    await mkdir(dirOf('strata'));
    await strataExtract(blob, dirOf('strata'));
    return true;
  });
  if (strataWorks) {
    const diffs = await compareTrees(dirOf('tar'), dirOf('strata'));
    if (diffs.length) errors.push(`strata's tree differs from tar's in ${diffs.length} ways (timed anyway): ${oneLine(diffs.slice(0, 3).join('; '))}`);
    else notes.push("strata's tree equals tar's (types, modes, owners, contents, xattrs, hardlinks; checked on the untimed warm-up run)");
  }
  for (const who of ['strata', 'tar']) await rm(dirOf(who), { recursive: true, force: true });

  const contenders = { strata: strataExtract, tar: tarExtract };
  const times: Record<keyof typeof contenders, number[]> = { strata: [], tar: [] };
  for (let rep = 0; rep < ctx.opts.reps; rep++) {
    const order = rep % 2 ? (['tar', 'strata'] as const) : (['strata', 'tar'] as const);
    for (const who of order) {
      if (who === 'strata' && !strataWorks) continue;
      const dir = dirOf(who);
      await mkdir(dir);
      await settle();
      await readThrough(blob);
      const t = await attempt(`${who} run ${rep + 1}`, errors, () => timeMs(() => contenders[who](blob, dir)));
      if (t !== null) times[who].push(t);
      await rm(dir, { recursive: true });
    }
  }
  notes.push(`runs (ms): strata ${times.strata.map(Math.round).join(', ') || '-'}; tar ${times.tar.map(Math.round).join(', ')}`);
  const med = (xs: number[]) => (xs.length ? median(xs) : null);
  return {
    name: 'extract',
    rows: [{ workload: 'extract', metric: 'apply biggest layer (gzip)', unit: 'ms', strata: med(times.strata), peerName: 'GNU tar -xzf', peer: med(times.tar), goal: { kind: 'ratio', max: 1.0 } }],
    notes,
    errors,
  };
}
