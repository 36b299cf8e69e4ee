/**
 * W1 pull, standalone: the realistic image pushed to a local registry, pulled into empty stores by strata,
 * by `docker pull` (a private dockerd) and by `skopeo copy` + `umoci unpack`. Usage: node --import tsx bench/pull.ts [--reps N]  (root; run `npm run build` first)
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { startRegistry, pushLayout } from '../test/fixtures/registry.js';
import { startDockerd } from '../test/fixtures/dockerd.js';
import { realisticImage } from '../test/fixtures/images.js';
import { runOk } from '../test/fixtures/run.js';
import { unmountUnder } from '../test/fixtures/unmount.js';

const BIN = resolve(import.meta.dirname, '../bin/strata');
const { values } = parseArgs({ options: { reps: { type: 'string' } } });
const reps = Number(values.reps ?? 3);

async function timed(fn: () => Promise<unknown>): Promise<number> {
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
  const ref = `${reg.url}/realistic:latest`;
  const results: Record<string, number[]> = { strata: [], docker: [], 'skopeo+umoci': [] };
  for (let i = 0; i < reps; i++) {
    const root = join(work, `strata-${i}`);
    results.strata!.push(await timed(() => runOk(BIN, ['--data-root', root, '-s', 'overlay2', 'pull', '-q', ref], { timeoutMs: 600_000 })));
    unmountUnder(root);
    await rm(root, { recursive: true, force: true });

    await dockerd.docker(['rmi', '-f', ref]);
    await dockerd.docker(['builder', 'prune', '-af']);
    results.docker!.push(
      await timed(async () => {
        const r = await dockerd.docker(['pull', '-q', ref], { timeoutMs: 600_000 });
        if (r.code !== 0) throw new Error(`docker pull failed: ${r.stderr}`);
      }),
    );
    await dockerd.docker(['rmi', '-f', ref]);

    const layout = join(work, `oci-${i}`);
    results['skopeo+umoci']!.push(
      await timed(async () => {
        await runOk('skopeo', ['--insecure-policy', 'copy', '--quiet', '--src-tls-verify=false', `docker://${ref}`, `oci:${layout}:r`], { timeoutMs: 600_000 });
        await runOk('umoci', ['unpack', '--image', `${layout}:r`, join(layout, 'bundle')], { timeoutMs: 600_000 });
      }),
    );
    await rm(layout, { recursive: true, force: true });
  }
  const s = median(results.strata!);
  process.stdout.write(`W1 pull of ${ref} (median of ${reps}, empty store)\n`);
  for (const [k, v] of Object.entries(results)) {
    process.stdout.write(`  ${k.padEnd(14)} ${median(v).toFixed(2)} s   [${v.map((x) => x.toFixed(2)).join(', ')}]   strata/${k} = ${(s / median(v)).toFixed(2)}\n`);
  }
} finally {
  await dockerd.stop();
  await reg.stop();
  unmountUnder(work);
  await rm(work, { recursive: true, force: true });
}
