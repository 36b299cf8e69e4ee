/**
 * strata's benchmarks, each workload measured beside its peer in the same run (see BENCHMARKS.md).
 * Usage: npm run bench [-- --only extract,create --reps 5]
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { unmountUnder } from '../test/fixtures/unmount.js';
import { oneLine } from './attempt.js';
import { cleanupAll, cleanupOnSignals, onCleanup } from './cleanup.js';
import { commitWorkload } from './commit.js';
import { BenchContext, type BenchImage, type BenchOptions } from './context.js';
import { createWorkload } from './create.js';
import { extractWorkload } from './extract.js';
import { machineFacts } from './machine.js';
import { renderReport, type WorkloadResult } from './report.js';

const WORKLOADS: Record<string, (ctx: BenchContext) => Promise<WorkloadResult>> = {
  extract: extractWorkload,
  create: createWorkload,
  commit: commitWorkload,
};
const IMAGES: BenchImage[] = ['realistic', 'debian', 'busybox'];
const RESULTS = fileURLToPath(new URL('./results.md', import.meta.url));

function positiveInt(name: string, v: string | undefined, dflt: number): number {
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, not ${JSON.stringify(v)}`);
  return n;
}

function options(): { only: string[]; opts: BenchOptions } {
  const { values } = parseArgs({
    options: { only: { type: 'string', multiple: true }, reps: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  });
  if (values.help) {
    process.stdout.write(
      `usage: npm run bench [-- --only <${Object.keys(WORKLOADS).join('|')}>[,...]] [--reps N]\n` +
        'env: STRATA_BENCH_REPS (3), STRATA_BENCH_CONTAINERS (100), STRATA_BENCH_FILES (2000),\n' +
        `     STRATA_BENCH_IMAGE (${IMAGES.join('|')}), STRATA_BENCH_DIR (os.tmpdir())\n`,
    );
    process.exit(0);
  }
  const only = (values.only ?? []).flatMap((s) => s.split(',')).filter(Boolean);
  for (const w of only) if (!(w in WORKLOADS)) throw new Error(`unknown workload ${JSON.stringify(w)}: one of ${Object.keys(WORKLOADS).join(', ')}`);
  const env = process.env;
  const image = (env.STRATA_BENCH_IMAGE || 'realistic') as BenchImage;
  if (!IMAGES.includes(image)) throw new Error(`STRATA_BENCH_IMAGE must be one of ${IMAGES.join(', ')}`);
  return {
    only: only.length ? only : Object.keys(WORKLOADS),
    opts: {
      reps: positiveInt('--reps', values.reps ?? env.STRATA_BENCH_REPS, 3),
      containers: positiveInt('STRATA_BENCH_CONTAINERS', env.STRATA_BENCH_CONTAINERS, 100),
      files: positiveInt('STRATA_BENCH_FILES', env.STRATA_BENCH_FILES, 2000),
      image,
      dir: env.STRATA_BENCH_DIR || tmpdir(),
    },
  };
}

async function main(): Promise<number> {
  const { only, opts } = options();
  cleanupOnSignals();
  const work = await mkdtemp(join(opts.dir, 'strata-bench-'));
  onCleanup('bench temp dir', async () => {
    unmountUnder(work);
    await rm(work, { recursive: true, force: true });
  });
  const ctx = new BenchContext(opts, work);
  const facts = await machineFacts(opts.dir);
  const results: WorkloadResult[] = [];
  try {
    for (const name of only) {
      process.stderr.write(`bench: ${name}...\n`);
      const t0 = Date.now();
      try {
        results.push(await WORKLOADS[name]!(ctx));
      } catch (e) {
        results.push({ name, rows: [], notes: [], errors: [oneLine(e)] });
      }
      process.stderr.write(`bench: ${name} done in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    }
  } finally {
    process.stderr.write('bench: cleaning up...\n');
    await cleanupAll();
  }
  const settings = `image ${opts.image}, ${opts.reps} repetitions (median), ${opts.containers} containers, ${opts.files} files`;
  const report = renderReport({ date: new Date(), facts, settings, results });
  process.stdout.write(report);
  await writeFile(RESULTS, report);
  return results.some((r) => r.errors.length) ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  async (e: unknown) => {
    process.stderr.write(`bench: ${e instanceof Error ? e.message : String(e)}\n`);
    await cleanupAll();
    process.exit(2);
  },
);
