/**
 * Issue 4's read benchmark: lstat + read of every file of the realistic Debian + python3 image through
 * the userspace union vs through a kernel overlay mount of the same layers, from Node, with 1, 3 and 125
 * layers. Usage: npm run build && node --import tsx bench/union-read.ts [--reps N] (root: kernel overlay).
 *
 * 1 layer: the image flattened. 3: its real layers. 125: its real layers under 122 small layers, each
 * adding one file to /etc (so / and /etc merge across all 125 branches). The union reads layers in AUFS
 * form (`.wh.` files, as GNU tar extracts them), the kernel in overlay form (char 0/0, opaque xattr);
 * both get an empty writable upper, as a container has. Both sides run the same walk (readdir for
 * directories, lstat for every entry, readFile for files), one side after the other, alternating which
 * goes first, after an untimed warm-up of each that also checks that they saw the same files and bytes.
 */
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readdir as hostReaddir, lstat as hostLstat, readFile as hostReadFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { applyLayer } from '../src/archive/apply-layer.js';
import { decompress } from '../src/archive/compression.js';
import { native } from '../src/native/native.js';
import { openUnion } from '../src/union/open-union.js';
import { blobPath, imageInfo, realisticImage } from '../test/fixtures/images.js';
import { runOk } from '../test/fixtures/run.js';
import { unmountUnder } from '../test/fixtures/unmount.js';
import { cleanupAll, cleanupOnSignals, onCleanup } from './cleanup.js';
import { median, timeMs } from './stats.js';

const SMALL_LAYERS = 122;

/** What the walk needs; node:fs/promises (under a mount point) and the union both provide it. */
interface ReadFs {
  readdir(p: string): Promise<string[]>;
  lstat(p: string): Promise<{ isDirectory(): boolean; isFile(): boolean }>;
  readFile(p: string): Promise<Buffer | string>;
}

/** Every entry below `dir`: directories listed, every entry lstat'ed, every file read whole. */
async function walk(fs: ReadFs, dir: string, acc = { files: 0, bytes: 0 }): Promise<typeof acc> {
  for (const name of await fs.readdir(dir)) {
    const p = dir === '/' ? `/${name}` : `${dir}/${name}`;
    const st = await fs.lstat(p);
    if (st.isDirectory()) await walk(fs, p, acc);
    else if (st.isFile()) {
      acc.files++;
      acc.bytes += (await fs.readFile(p)).length;
    }
  }
  return acc;
}

function under(mount: string): ReadFs {
  return { readdir: (p) => hostReaddir(mount + p), lstat: (p) => hostLstat(mount + p), readFile: (p) => hostReadFile(mount + p) };
}

async function applyBlob(dir: string, blob: string, whiteouts: 'overlay' | 'naive'): Promise<void> {
  const { stream } = await decompress(createReadStream(blob, { highWaterMark: 1 << 20 }));
  await applyLayer(dir, stream, { whiteouts });
}

interface Stack {
  name: string;
  /** Topmost first, relative to the work directory. */
  kernel: string[];
  union: string[];
}

/** The image's layers on disk in both forms, the flattened image, and the small layers. */
async function prepare(work: string): Promise<Stack[]> {
  const img = await realisticImage();
  const blobs = (await imageInfo(img.layout, img.ref)).manifest.layers.map((l) => blobPath(img.layout, l.digest));
  const real = { kernel: [] as string[], union: [] as string[] };
  for (const [i, blob] of blobs.entries()) {
    await mkdir(join(work, `k${i}`));
    await applyBlob(join(work, `k${i}`), blob, 'overlay');
    // GNU tar keeps `.wh.` entries as plain files: the AUFS form.
    await mkdir(join(work, `u${i}`));
    await runOk('tar', ['-xzf', blob, '-C', join(work, `u${i}`), '--numeric-owner', '-p', '--xattrs', '--xattrs-include=*']);
    real.kernel.unshift(`k${i}`);
    real.union.unshift(`u${i}`);
  }
  await mkdir(join(work, 'flat'));
  for (const blob of blobs) await applyBlob(join(work, 'flat'), blob, 'naive');
  const small: string[] = [];
  for (let i = 0; i < SMALL_LAYERS; i++) {
    await mkdir(join(work, `s${i}`, 'etc'), { recursive: true });
    await writeFile(join(work, `s${i}`, 'etc', `strata-bench-layer-${i}`), `layer ${i}\n`);
    small.unshift(`s${i}`);
  }
  return [
    { name: '1 (flattened)', kernel: ['flat'], union: ['flat'] },
    { name: `${blobs.length} (the image's)`, ...real },
    { name: `${blobs.length + SMALL_LAYERS} (${SMALL_LAYERS} small on top)`, kernel: [...small, ...real.kernel], union: [...small, ...real.union] },
  ];
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { reps: { type: 'string', default: '5' } } });
  const reps = Number(values.reps);
  cleanupOnSignals();
  const work = await mkdtemp(join(tmpdir(), 'strata-bench-union-'));
  onCleanup(`remove ${work}`, () => rm(work, { recursive: true, force: true }));
  onCleanup(`unmount under ${work}`, async () => unmountUnder(work));
  try {
    const stacks = await prepare(work);
    const rows: string[] = [];
    for (const [i, s] of stacks.entries()) {
      const dirs = ['upper', 'work', 'merged', 'uupper'].map((d) => join(work, `${d}${i}`));
      for (const d of dirs) await mkdir(d);
      const [upper, wdir, merged, uupper] = dirs as [string, string, string, string];
      // Relative lowerdirs (resolved against `work`) keep 125 layers' options under a page, as overlay2's l/ links do.
      native.mount('overlay', merged, 'overlay', 0, `lowerdir=${s.kernel.join(':')},upperdir=${upper},workdir=${wdir}`, work);
      const union = await openUnion([{ path: uupper, mode: 'rw' }, ...s.union.map((d) => ({ path: join(work, d), mode: 'ro' as const }))]);
      const sides = { kernel: under(merged), union: union as unknown as ReadFs };
      const seen = { kernel: await walk(sides.kernel, '/'), union: await walk(sides.union, '/') };
      if (JSON.stringify(seen.kernel) !== JSON.stringify(seen.union)) throw new Error(`${s.name}: the two sides saw different trees: ${JSON.stringify(seen)}`);
      const times = { kernel: [] as number[], union: [] as number[] };
      for (let r = 0; r < reps; r++) {
        const order = r % 2 === 0 ? (['kernel', 'union'] as const) : (['union', 'kernel'] as const);
        for (const side of order) times[side].push(await timeMs(() => walk(sides[side], '/')));
      }
      native.umount(merged, 0);
      const [k, u] = [median(times.kernel), median(times.union)];
      rows.push(`| ${s.name} | ${seen.kernel.files} files, ${(seen.kernel.bytes / 2 ** 20).toFixed(0)} MiB | ${k.toFixed(0)} | ${u.toFixed(0)} | ${(u / k).toFixed(2)} |`);
      process.stderr.write(`${rows.at(-1)}\n`);
    }
    process.stdout.write(['| layers | tree | kernel overlay (ms) | userspace union (ms) | ratio union/kernel |', '|---|---|---:|---:|---:|', ...rows].join('\n') + '\n');
    process.stdout.write(`median of ${reps} runs each, page cache warm, sides alternating\n`);
  } finally {
    await cleanupAll();
  }
}

await main();
