import { createReadStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Engine } from '../src/engine.js';
import { busyboxImage, debianImage, dockerArchive, realisticImage, type ImageFixture } from '../test/fixtures/images.js';
import { loadIntoDocker, startDockerd, type Dockerd } from '../test/fixtures/dockerd.js';
import { unmountUnder } from '../test/fixtures/unmount.js';
import { runOk } from '../test/fixtures/run.js';
import { onCleanup } from './cleanup.js';
import { DockerApi } from './docker-api.js';
import { timeMs } from './stats.js';

export type BenchImage = 'realistic' | 'debian' | 'busybox';

export interface BenchOptions {
  /** repetitions per measurement; the median is reported */
  reps: number;
  /** containers created by the create workload */
  containers: number;
  /** files added by the commit workload */
  files: number;
  image: BenchImage;
  /** where every temp dir goes (one filesystem for blob, targets and data-roots) */
  dir: string;
}

/** The tag both engines know the bench image by. */
export const BENCH_TAG = 'strata-bench/image:latest';

export interface StrataSide {
  engine: Engine;
  root: string;
  loadMs: number;
}

export interface DockerSide {
  dockerd: Dockerd;
  api: DockerApi;
  loadMs: number;
}

const once = <T>(f: () => Promise<T>): (() => Promise<T>) => {
  let p: Promise<T> | undefined;
  return () => (p ??= f());
};

/** `du -sx` in bytes: what a tree really occupies on its filesystem, hardlinks counted once. */
export async function diskBytes(dir: string): Promise<number> {
  const r = await runOk('du', ['-sx', '--block-size=1', dir]);
  return Number(r.stdout.split('\t')[0]);
}

/**
 * What the workloads share, built on first use and torn down by the cleanup stack: the image fixture, a
 * docker-save archive of it, a strata overlay2 store and a private dockerd, each with the image loaded.
 */
export class BenchContext {
  constructor(
    readonly opts: BenchOptions,
    /** this run's private directory under opts.dir */
    readonly work: string,
  ) {}

  async tempDir(name: string): Promise<string> {
    const d = join(this.work, name);
    await mkdir(d, { recursive: true });
    return d;
  }

  readonly image = once<ImageFixture>(() => ({ realistic: realisticImage, debian: debianImage, busybox: busyboxImage })[this.opts.image]());

  readonly archive = once(async () => {
    const img = await this.image();
    return dockerArchive(img.layout, img.ref, join(await this.tempDir('archive'), 'image.tar'), BENCH_TAG);
  });

  readonly strata = once<StrataSide>(async () => {
    const archive = await this.archive();
    const root = join(this.work, 'strata');
    const engine = await Engine.open({ dataRoot: root, storageDriver: 'overlay2' });
    onCleanup('strata data-root', async () => {
      await engine.close().catch(() => undefined);
      unmountUnder(root);
      await rm(root, { recursive: true, force: true });
    });
    const loadMs = await timeMs(() => engine.load(createReadStream(archive, { highWaterMark: 1 << 20 })));
    return { engine, root, loadMs };
  });

  readonly docker = once<DockerSide>(async () => {
    const archive = await this.archive();
    const dataRoot = join(this.work, 'docker');
    const dockerd = await startDockerd({ dataRoot, storageDriver: 'overlay2' });
    const api = new DockerApi(dockerd.host);
    onCleanup('dockerd', async () => {
      api.close();
      await dockerd.stop();
      await rm(dataRoot, { recursive: true, force: true });
    });
    const loadMs = await timeMs(() => loadIntoDocker(dockerd, archive));
    return { dockerd, api, loadMs };
  });
}
