import { attempt } from './attempt.js';
import { BENCH_TAG, diskBytes, type BenchContext } from './context.js';
import type { Row, WorkloadResult } from './report.js';
import { settle } from './settle.js';
import { percentile, timeMs } from './stats.js';

interface SideResult {
  times: number[];
  loaded: number;
  after: number;
  loadMs: number;
}

/**
 * `n` creations one after another, each timed, with `du -sx` of the data-root before and after. Both sides
 * start settled (see settle.ts): otherwise whichever side ran first would pay for the load or cleanup before.
 */
async function measure(n: number, dataRoot: string, loadMs: number, create: (name: string) => Promise<unknown>): Promise<SideResult> {
  const loaded = await diskBytes(dataRoot);
  await settle();
  const times: number[] = [];
  for (let i = 0; i < n; i++) times.push(await timeMs(() => create(`bench-create-${i}`)));
  return { times, loaded, after: await diskBytes(dataRoot), loadMs };
}

/**
 * W2 create + W7 disk: `containers` containers from the loaded image. strata in-process (engine.create on
 * overlay2); docker through POST /containers/create on its socket. Disk: `du -sx` of each data-root after
 * loading the image and after the containers.
 */
export async function createWorkload(ctx: BenchContext): Promise<WorkloadResult> {
  const n = ctx.opts.containers;
  const errors: string[] = [];
  const s = await attempt('strata', errors, async () => {
    const { engine, root, loadMs } = await ctx.strata();
    return measure(n, root, loadMs, (name) => engine.create({ image: BENCH_TAG, name }));
  });
  const d = await attempt('docker', errors, async () => {
    const { dockerd, api, loadMs } = await ctx.docker();
    return measure(n, dockerd.dataRoot, loadMs, (name) => api.call('POST', `/containers/create?name=${name}`, { Image: BENCH_TAG }));
  });

  const row = (metric: string, unit: Row['unit'], f: (r: SideResult) => number, goal?: Row['goal']): Row => ({
    workload: 'create',
    metric,
    unit,
    strata: s && f(s),
    peerName: 'dockerd POST /containers/create',
    peer: d && f(d),
    ...(goal ? { goal } : {}),
  });
  const facts = (who: string, r: SideResult | null) =>
    r ? `${who}: image load (setup, one run) ${Math.round(r.loadMs)} ms; du -sx of the data-root ${r.loaded} -> ${r.after} bytes` : `${who}: failed`;
  return {
    name: 'create',
    rows: [
      row('p50 per container', 'ms', (r) => percentile(r.times, 50), { kind: 'strata', max: 5 }),
      row('p95 per container', 'ms', (r) => percentile(r.times, 95)),
      row('data-root after image load (du)', 'bytes', (r) => r.loaded),
      row(`disk added per container (du, ${n} containers)`, 'bytes', (r) => (r.after - r.loaded) / n),
    ],
    notes: [
      `${n} containers created one after another, named by the bench on both sides; strata in-process, docker over its unix socket on a kept-alive connection`,
      facts('strata', s),
      facts('docker', d),
    ],
    errors,
  };
}
