import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../../src/native/native.js';
import { unmountUnder } from '../fixtures/unmount.js';
import { isRoot, requireCap } from '../helpers/caps.js';
import { KernelSide } from './differential/kernel-side.js';
import { runSequence } from './differential/run-sequence.js';
import { genSequence, opText, type Op, type Sequence } from './differential/sequence.js';
import { shrink } from './differential/shrink.js';

/**
 * Differential test: random operation sequences over generated lower branches, applied to a kernel
 * overlayfs mount and to the userspace union (see differential/run-sequence.ts for what is compared).
 * Where strata deliberately differs (renaming a lower or merged directory: the kernel, without
 * redirect_dir, answers EXDEV; strata moves it as `mv` does), the kernel side does what `mv` does on
 * EXDEV. A failure is shrunk to the shortest operation list that still fails and printed with its seed
 * (UNION_DIFF_SEED=<seed> runs that one sequence).
 */
const SEQUENCES = Number(process.env.UNION_DIFF_SEQUENCES ?? 2000);
const JOBS = Number(process.env.UNION_DIFF_JOBS ?? 2);
const OPS = 30;
const BASE_SEED = Number(process.env.UNION_DIFF_FIRST_SEED ?? 0x5eed);

async function report(tmp: string, kernel: KernelSide, seq: Sequence, step: number): Promise<string> {
  const fails = async (ops: readonly Op[]) => (await runSequence(tmp, kernel, { ...seq, ops: [...ops] })) !== null;
  const ops = await shrink(seq.ops.slice(0, step), fails);
  const d = await runSequence(tmp, kernel, { ...seq, ops });
  return [
    `seed ${seq.seed} (${seq.lowers.length} lower branches; UNION_DIFF_SEED=${seq.seed} reruns it): ${ops.length} of ${seq.ops.length} operations still fail:`,
    ...ops.map((o) => `  ${opText(o)}`),
    d?.text ?? '(the shrunk sequence passed on its rerun: flaky?)',
  ].join('\n');
}

test('userspace union matches kernel overlayfs on random operation sequences', { timeout: Number(process.env.UNION_DIFF_TIMEOUT ?? 600_000) }, async (t) => {
  if (!requireCap(t, 'root (kernel overlayfs mount, chroot)', isRoot)) return;
  const tmp = await mkdtemp(join(tmpdir(), 'strata-union-diff-'));
  const workers: KernelSide[] = [];
  try {
    // A private tmpfs: thousands of small trees made and removed cost no disk I/O (and nothing else's).
    native.mount('tmpfs', tmp, 'tmpfs', 0, 'size=512m,mode=0700');
    const seeds = process.env.UNION_DIFF_SEED ? [Number(process.env.UNION_DIFF_SEED)] : Array.from({ length: SEQUENCES }, (_, s) => BASE_SEED + s);
    const failures: string[] = [];
    // JOBS sequences at a time, each job with its own chrooted kernel-side worker: the two sides of a
    // step run in parallel, and one job's wait on its worker is another's time on the union.
    const job = async (kernel: KernelSide) => {
      for (let seed = seeds.shift(); seed !== undefined && failures.length < 3; seed = seeds.shift()) {
        const seq = genSequence(seed, OPS);
        const d = await runSequence(tmp, kernel, seq);
        if (d === null) continue;
        failures.push(await report(tmp, kernel, seq, d.step));
        t.diagnostic(failures.at(-1)!);
      }
    };
    for (let i = 0; i < JOBS; i++) workers.push(KernelSide.start(tmp));
    await Promise.all(workers.map(job));
    assert.equal(failures.length, 0, failures.join('\n\n'));
  } finally {
    await Promise.all(workers.map((w) => w.stop()));
    unmountUnder(tmp);
    await rm(tmp, { recursive: true, force: true });
  }
});
