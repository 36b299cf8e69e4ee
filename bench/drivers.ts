/**
 * The seeds' storage-driver comparison, measured: every driver on one machine, overlay2 as the reference
 * column. Usage: npm run build && node --import tsx bench/drivers.ts [--only overlay2,btrfs] [--reps N]
 * Writes bench/drivers-results.md. Needs root (kernel overlay, loop devices, zfs-fuse).
 */
import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { Engine } from '../src/engine.js';
import { native } from '../src/native/native.js';
import { busyboxImage, dockerArchive } from '../test/fixtures/images.js';
import { unmountUnder } from '../test/fixtures/unmount.js';
import { createZfsPool } from '../test/fixtures/zfs-pool.js';
import { cleanupAll, cleanupOnSignals, onCleanup } from './cleanup.js';
import { machineFacts } from './machine.js';
import { median, percentile, timeMs } from './stats.js';

const RESULTS = fileURLToPath(new URL('./drivers-results.md', import.meta.url));
const BIG_MIB = 64;
const DEPTH = 30;
const SPACE_CONTAINERS = 20;

interface DriverSetup {
  opts: string[];
  /** Bytes the driver's storage holds now, by the driver's own accounting. */
  usage(root: string): Promise<number>;
}

const duBytes = (dir: string) => Number(execFileSync('du', ['-sx', '--block-size=1', dir], { encoding: 'utf8' }).split('\t')[0]);
const statfsUsed = (path: string) => {
  const s = native.statfs(path);
  return (s.blocks - s.bfree) * s.bsize;
};

/** Per driver: its options and where its space is counted (du for directory drivers, the pool's own figure for pools). */
const SETUPS: Record<string, (work: string) => Promise<DriverSetup>> = {
  overlay2: async () => ({ opts: [], usage: async (root) => duBytes(root) }),
  'fuse-overlayfs': async () => ({ opts: [], usage: async (root) => duBytes(root) }),
  btrfs: async (work) => ({
    opts: [`btrfs.pool=${join(work, 'btrfs-pool.img')}`, 'btrfs.pool_size=4G'],
    usage: async (root) => {
      execFileSync('btrfs', ['filesystem', 'sync', join(root, 'btrfs')]);
      return statfsUsed(join(root, 'btrfs'));
    },
  }),
  zfs: async () => {
    const pool = await createZfsPool('4G');
    onCleanup('zfs pool (and zfs-fuse if started here)', () => pool.close());
    const fsname = `${pool.name}/bench`;
    execFileSync('zfs', ['create', fsname]);
    const used = () => Number(execFileSync('zfs', ['get', '-Hp', '-o', 'value', 'used', fsname], { encoding: 'utf8' }).trim());
    return {
      opts: [`zfs.fsname=${fsname}`],
      // zfs accounts a write when its transaction group commits: wait until the figure settles.
      usage: async () => {
        execFileSync('sync');
        let last = used();
        for (let i = 0; i < 20; i++) {
          await sleep(1000);
          const now = used();
          if (now === last) return now;
          last = now;
        }
        return last;
      },
    };
  },
  devicemapper: async () => ({
    opts: ['dm.loopdatasize=8G', 'dm.loopmetadatasize=16M', 'dm.basesize=256M', 'dm.fs=ext4'],
    // The pool filesystem is mounted while any device is (the bench holds one container mounted).
    usage: async (root) => {
      const pool = join(root, 'devicemapper', 'pool');
      execFileSync('sync', ['--file-system', pool]);
      return statfsUsed(pool);
    },
  }),
  overlay: async () => ({ opts: [], usage: async (root) => duBytes(root) }),
  vfs: async () => ({ opts: [], usage: async (root) => duBytes(root) }),
};
const DRIVERS = Object.keys(SETUPS);

interface Measured {
  loadMs: number;
  createP50: number;
  createP95: number;
  writeMs: number;
  writeBytes: number;
  spacePerContainer: number;
  deepReadMs: number;
}

/** Write into a container's view between mount and unmount. */
async function inContainer(engine: Engine, id: string, fn: (view: string) => Promise<void>): Promise<void> {
  const view = await engine.mount(id);
  try {
    await fn(view);
  } finally {
    await engine.unmount(id);
  }
}

async function measureDriver(driver: string, work: string, archive: string, reps: number): Promise<Measured> {
  const dir = await mkdtemp(join(work, `${driver}-`));
  onCleanup(`${driver} data`, async () => {
    unmountUnder(dir);
    await rm(dir, { recursive: true, force: true });
  });
  const setup = await SETUPS[driver]!(dir);
  const root = join(dir, 'data');
  const engine = await Engine.open({ dataRoot: root, storageDriver: driver, storageOpts: setup.opts });
  onCleanup(`${driver} engine`, () => engine.close());
  const loadMs = await timeMs(() => engine.load(createReadStream(archive, { highWaterMark: 1 << 20 })));
  // Keeps pool-backed drivers (devicemapper) active, so usage is read from a mounted pool.
  const holder = await engine.create({ image: 'busybox' });
  await engine.mount(holder.ID);

  // (a) create time on busybox.
  const createTimes: number[] = [];
  for (let i = 0; i < Math.max(reps, 20); i++) createTimes.push(await timeMs(() => engine.create({ image: 'busybox' })));

  // The big image: busybox + one committed layer holding a 64 MiB file of random bytes.
  const maker = await engine.create({ image: 'busybox' });
  await inContainer(engine, maker.ID, async (view) => {
    execFileSync('dd', ['if=/dev/urandom', `of=${join(view, 'big')}`, 'bs=1M', `count=${BIG_MIB}`, 'status=none']);
  });
  await engine.commit(maker.ID, { reference: 'bench/big:1' });

  // (c) disk space for 20 containers from the big image.
  const before = await setup.usage(root);
  const ctrs: string[] = [];
  for (let i = 0; i < SPACE_CONTAINERS; i++) ctrs.push((await engine.create({ image: 'bench/big:1' })).ID);
  const spacePerContainer = ((await setup.usage(root)) - before) / SPACE_CONTAINERS;

  // (b) first write to the big file: append 4 KiB in a fresh container (open, write, close; then fsync, untimed).
  const writeTimes: number[] = [];
  const beforeWrites = await setup.usage(root);
  const writers = ctrs.slice(0, Math.max(3, Math.min(reps, ctrs.length)));
  for (const id of writers) {
    await inContainer(engine, id, async (view) => {
      writeTimes.push(
        await timeMs(async () => {
          const fh = await open(join(view, 'big'), 'a');
          await fh.write(Buffer.alloc(4096, 1));
          await fh.close();
        }),
      );
      execFileSync('sync', ['--file-system', view]);
    });
  }
  const writeBytes = ((await setup.usage(root)) - beforeWrites) / writers.length;

  // (d) a file 30 layers deep: 30 commits, the first adds /deep/bottom, each later one a file of its own.
  let image = 'busybox';
  for (let i = 0; i < DEPTH; i++) {
    const c = await engine.create({ image });
    await inContainer(engine, c.ID, async (view) => {
      await mkdir(join(view, 'deep'), { recursive: true });
      await writeFile(join(view, 'deep', i === 0 ? 'bottom' : `layer-${i}`), `layer ${i}\n`);
    });
    image = `bench/deep:${i}`;
    await engine.commit(c.ID, { reference: image });
    await engine.rm(c.ID);
  }
  const reader = await engine.create({ image });
  const readTimes: number[] = [];
  // Each sample is the first open+read after a fresh mount of the container.
  for (let i = 0; i < Math.max(reps, 7); i++) {
    await inContainer(engine, reader.ID, async (view) => {
      readTimes.push(await timeMs(() => readFile(join(view, 'deep', 'bottom'))));
    });
  }
  await engine.unmount(holder.ID);
  return {
    loadMs,
    createP50: percentile(createTimes, 50),
    createP95: percentile(createTimes, 95),
    writeMs: median(writeTimes),
    writeBytes,
    spacePerContainer,
    deepReadMs: median(readTimes),
  };
}

const fmtMs = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + ' ms';
function fmtBytes(v: number): string {
  const a = Math.abs(v);
  if (a >= 2 ** 20) return `${(v / 2 ** 20).toFixed(1)} MiB`;
  if (a >= 2 ** 10) return `${(v / 2 ** 10).toFixed(0)} KiB`;
  return `${Math.round(v)} B`;
}

const ROWS: Array<{ label: string; pick: (m: Measured) => number; fmt: (v: number) => string }> = [
  { label: 'container create, p50 (busybox)', pick: (m) => m.createP50, fmt: fmtMs },
  { label: 'container create, p95 (busybox)', pick: (m) => m.createP95, fmt: fmtMs },
  { label: `first write: append 4 KiB to a ${BIG_MIB} MiB image file (median)`, pick: (m) => m.writeMs, fmt: fmtMs },
  { label: 'space that first write took, per container', pick: (m) => m.writeBytes, fmt: fmtBytes },
  { label: `space per container, ${SPACE_CONTAINERS} containers of the ${BIG_MIB} MiB image`, pick: (m) => m.spacePerContainer, fmt: fmtBytes },
  { label: `open+read a file ${DEPTH} layers deep, first read after mount (median)`, pick: (m) => m.deepReadMs, fmt: fmtMs },
  { label: 'image load (busybox, setup, one run)', pick: (m) => m.loadMs, fmt: fmtMs },
];

function table(drivers: string[], results: Map<string, Measured | string>): string {
  const ref = results.get('overlay2');
  const head = `| metric | ${drivers.map((d) => (d === 'overlay2' ? 'overlay2 (reference)' : d)).join(' | ')} |`;
  const sep = `|---|${drivers.map(() => '---:').join('|')}|`;
  const rows = ROWS.map((r) => {
    const cells = drivers.map((d) => {
      const m = results.get(d);
      if (typeof m !== 'object') return 'failed';
      const v = r.pick(m);
      const base = typeof ref === 'object' ? r.pick(ref) : NaN;
      const ratio = d !== 'overlay2' && Number.isFinite(base) && base > 0 ? ` (×${v / base >= 10 ? (v / base).toFixed(0) : (v / base).toPrecision(2)})` : '';
      return r.fmt(v) + ratio;
    });
    return `| ${r.label} | ${cells.join(' | ')} |`;
  });
  return [head, sep, ...rows].join('\n');
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { only: { type: 'string' }, reps: { type: 'string' } } });
  const drivers = values.only ? values.only.split(',').filter(Boolean) : DRIVERS;
  for (const d of drivers) if (!(d in SETUPS)) throw new Error(`unknown driver ${JSON.stringify(d)}: one of ${DRIVERS.join(', ')}`);
  const reps = Number(values.reps ?? 7);
  if (!Number.isInteger(reps) || reps < 1) throw new Error('--reps must be a positive integer');
  if (process.getuid?.() !== 0) throw new Error('the driver bench needs root');
  cleanupOnSignals();
  const base = process.env.STRATA_BENCH_DIR || tmpdir();
  const work = await mkdtemp(join(base, 'strata-bench-drivers-'));
  onCleanup('bench temp dir', async () => {
    unmountUnder(work);
    await rm(work, { recursive: true, force: true });
  });
  const results = new Map<string, Measured | string>();
  try {
    const img = await busyboxImage();
    const archive = await dockerArchive(img.layout, img.ref, join(work, 'busybox.tar'), 'busybox:latest');
    for (const d of drivers) {
      process.stderr.write(`bench drivers: ${d}...\n`);
      const t0 = Date.now();
      try {
        results.set(d, await measureDriver(d, work, archive, reps));
      } catch (e) {
        results.set(d, (e as Error).message.split('\n')[0]!);
        process.stderr.write(`bench drivers: ${d} failed: ${(e as Error).message}\n`);
      }
      process.stderr.write(`bench drivers: ${d} done in ${((Date.now() - t0) / 1000).toFixed(0)} s\n`);
    }
    const facts = await machineFacts(base);
    const failures = [...results].filter(([, m]) => typeof m === 'string').map(([d, m]) => `- ${d}: ${m}`);
    const md = [
      '# strata storage drivers, side by side',
      '',
      `Generated by \`node --import tsx bench/drivers.ts\` on ${new Date().toISOString()}. Ratios are to overlay2 (the kernel's overlay, the reference column).`,
      '',
      table(drivers, results),
      '',
      '- Image: the busybox fixture (time-bound; the debian fixture needs the Debian mirror and a minute to build), loaded with `Engine.load`.',
      `- Create: ${Math.max(reps, 20)} \`Engine.create\` calls one after another (init layer + read-write layer).`,
      `- First write: a ${BIG_MIB} MiB random file committed on top of busybox; in ${Math.max(3, Math.min(reps, SPACE_CONTAINERS))} fresh containers, open(O_APPEND) + write 4 KiB + close timed, then synced; the space row is the storage growth after the sync. overlay-family drivers copy the whole file up; btrfs, zfs and devicemapper copy blocks.`,
      `- Space: ${SPACE_CONTAINERS} containers of that image; growth of \`du -sx\` of the data-root (overlay2, overlay, fuse-overlayfs, vfs), of the btrfs pool filesystem (statfs after \`btrfs filesystem sync\`), of the zfs parent dataset's \`used\` (after its transaction group settles), of the devicemapper pool's xfs (statfs).`,
      `- Deep read: ${DEPTH} images built by commit, the first adding /deep/bottom; a container of the top one is mounted afresh ${Math.max(reps, 7)} times and each first open+read of /deep/bottom is timed.`,
      '- Pools: btrfs on a 4 GiB loop-mounted pool file; zfs on a 4 GiB file pool served by zfs-fuse (FUSE: every access crosses to a userspace daemon); devicemapper with an 8 GiB sparse data pool, 256 MiB ext4 devices, reflink clones (no kernel device-mapper here).',
      '',
      `Machine: ${facts.kernel}; ${facts.cpus}; ${facts.memory}; bench dir on ${facts.filesystem}; node ${facts.node}.`,
      ...(failures.length ? ['', 'Failed:', ...failures] : []),
      '',
    ].join('\n');
    await writeFile(RESULTS, md);
    process.stdout.write(md);
    return failures.length ? 1 : 0;
  } finally {
    await cleanupAll();
  }
}

main().then(
  (code) => process.exit(code),
  async (e: unknown) => {
    process.stderr.write(`bench drivers: ${(e as Error).message}\n`);
    await cleanupAll();
    process.exit(1);
  },
);
