/**
 * W1 pull, standalone: the realistic image pushed to a local registry, pulled into empty stores by strata,
 * by `docker pull` (a private dockerd) and by `skopeo copy` + `umoci unpack`; then pulled by strata and docker
 * into stores that already hold its base layer (the `debian:minbase` image, pulled first, untimed).
 * Usage: node --import tsx bench/pull.ts [--reps N]  (root; run `npm run build` first)
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startRegistry, pushLayout } from '../test/fixtures/registry.js';
import { startDockerd } from '../test/fixtures/dockerd.js';
import { debianImage, realisticImage } from '../test/fixtures/images.js';
import { runOk } from '../test/fixtures/run.js';
import { unmountUnder } from '../test/fixtures/unmount.js';
import { settle } from './settle.js';

const BIN = resolve(import.meta.dirname, '../bin/strata');
const { values } = parseArgs({ options: { reps: { type: 'string' } } });
const reps = Number(values.reps ?? 3);

/** Seconds that `fn` took, started on a settled machine (settle.ts), so no side pays for the cleanup before it. */
async function timed(fn: () => Promise<unknown>): Promise<number> {
  await settle();
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const work = await mkdtemp(join(tmpdir(), 'strata-bench-pull-'));
const img = await realisticImage();
const reg = await startRegistry();
const dockerd = await startDockerd({ extraArgs: ['--insecure-registry', reg.url] });
try {
  await pushLayout(img.layout, img.ref, reg.url, 'realistic:latest');
  const base = await debianImage();
  await pushLayout(base.layout, 'debian:minbase', reg.url, 'minbase:latest');
  const ref = `${reg.url}/realistic:latest`;
  const baseRef = `${reg.url}/minbase:latest`;
  const strataPull = (root: string, r: string) => runOk(BIN, ['--data-root', root, '-s', 'overlay2', 'pull', '-q', r], { timeoutMs: 600_000 });
  const dockerPull = async (r: string) => {
    const res = await dockerd.docker(['pull', '-q', r], { timeoutMs: 600_000 });
    if (res.code !== 0) throw new Error(`docker pull failed: ${res.stderr}`);
  };
  const empty: Record<string, number[]> = { strata: [], docker: [], 'skopeo+umoci': [] };
  const withBase: Record<string, number[]> = { strata: [], docker: [] };
  for (let i = 0; i < reps; i++) {
    const root = join(work, `strata-${i}`);
    empty.strata!.push(await timed(() => strataPull(root, ref)));
    unmountUnder(root);
    await rm(root, { recursive: true, force: true });

    await dockerd.docker(['rmi', '-f', ref, baseRef]);
    await dockerd.docker(['builder', 'prune', '-af']);
    empty.docker!.push(await timed(() => dockerPull(ref)));
    await dockerd.docker(['rmi', '-f', ref]);

    const layout = join(work, `oci-${i}`);
    empty['skopeo+umoci']!.push(
      await timed(async () => {
        await runOk('skopeo', ['--insecure-policy', 'copy', '--quiet', '--src-tls-verify=false', `docker://${ref}`, `oci:${layout}:r`], { timeoutMs: 600_000 });
        await runOk('umoci', ['unpack', '--image', `${layout}:r`, join(layout, 'bundle')], { timeoutMs: 600_000 });
      }),
    );
    await rm(layout, { recursive: true, force: true });

    // The base layer already there: only python3's layer and the deletion layer travel.
    const based = join(work, `strata-base-${i}`);
    await strataPull(based, baseRef);
    withBase.strata!.push(await timed(() => strataPull(based, ref)));
    unmountUnder(based);
    await rm(based, { recursive: true, force: true });
    await dockerPull(baseRef);
    withBase.docker!.push(await timed(() => dockerPull(ref)));
    await dockerd.docker(['rmi', '-f', ref, baseRef]);
  }
  const report = (title: string, results: Record<string, number[]>) => {
    const s = median(results.strata!);
    process.stdout.write(`${title} (median of ${reps})\n`);
    for (const [k, v] of Object.entries(results)) {
      process.stdout.write(`  ${k.padEnd(14)} ${median(v).toFixed(2)} s   [${v.map((x) => x.toFixed(2)).join(', ')}]   strata/${k} = ${(s / median(v)).toFixed(2)}\n`);
    }
  };
  report(`W1 pull of ${ref}, empty store`, empty);
  report(`W1 pull of ${ref}, base layer already present`, withBase);
} finally {
  await dockerd.stop();
  await reg.stop();
  unmountUnder(work);
  await rm(work, { recursive: true, force: true });
}
