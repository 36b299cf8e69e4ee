import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, lstatSync, readlinkSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { busyboxImage, debianImage, dockerArchive, umociUnpack } from '../fixtures/images.js';
import { compareTrees } from '../fixtures/compare-tree.js';
import { startDockerd, loadIntoDocker } from '../fixtures/dockerd.js';
import { run } from '../fixtures/run.js';
import { ENGINE_DRIVERS, openTestStore, storeListing, type TestStore } from '../helpers/engine.js';
import { INIT_PATHS } from './image-lifecycle.test.js';
import type { Engine } from '../../src/engine.js';

async function mergedEqualsUmoci(engine: Engine, image: string, reference: string): Promise<void> {
  const c = await engine.create({ image });
  const root = await engine.mount(c.ID);
  try {
    assert.deepEqual(await compareTrees(root, reference, { ignore: INIT_PATHS }), []);
  } finally {
    await engine.unmount(c.ID);
    await engine.rm(c.ID);
  }
}

describe('real images', () => {
  let work: string;
  let debianRef: string;
  let debianTar: string;
  let minbaseTar: string;

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'strata-real-'));
    const deb = await debianImage();
    debianRef = await umociUnpack(deb.layout, deb.ref, join(work, 'debian-bundle'));
    debianTar = await dockerArchive(deb.layout, deb.ref, join(work, 'debian.tar'), 'debian:bookworm');
    minbaseTar = await dockerArchive(deb.layout, 'debian:minbase', join(work, 'minbase.tar'), 'debian:minbase');
  });
  after(async () => {
    await rm(work, { recursive: true, force: true });
  });

  for (const driver of ENGINE_DRIVERS) {
    describe(`on ${driver}`, () => {
      let store: TestStore;
      before(async () => {
        store = await openTestStore(driver);
      });
      after(async () => store?.dispose());

      it('a 3-layer Debian image (install layer, deletion layer) equals umoci unpack, entry by entry', async () => {
        assert.deepEqual(await store.engine.load(createReadStream(debianTar)), ['Loaded image: debian:bookworm']);
        assert.equal((await store.engine.inspectImage('debian:bookworm')).RootFS.Layers.length, 3);
        await mergedEqualsUmoci(store.engine, 'debian:bookworm', debianRef);
      });

      it("the init layer: Docker's placeholders over the image, the image's directories keep their attributes", async () => {
        const c = await store.engine.create({ image: 'debian:bookworm' });
        const root = await store.engine.mount(c.ID);
        try {
          for (const dir of ['proc', 'sys', 'dev', 'etc', 'dev/pts', 'dev/shm']) {
            const got = lstatSync(join(root, dir));
            const want = lstatSync(join(debianRef, dir), { throwIfNoEntry: false });
            assert.ok(got.isDirectory(), dir);
            if (want) assert.deepEqual([got.mode, got.uid, got.gid], [want.mode, want.uid, want.gid], `/${dir} keeps the image's mode and owner`);
          }
          for (const f of ['.dockerenv', 'etc/hosts', 'etc/hostname', 'etc/resolv.conf', 'dev/console']) {
            const st = lstatSync(join(root, f));
            assert.ok(st.isFile() && st.size === 0, `/${f} is an empty placeholder`);
            assert.equal(st.mode & 0o7777, 0o755);
          }
          assert.equal(readlinkSync(join(root, 'etc/mtab')), '/proc/mounts');
          assert.ok((await readFile(join(debianRef, 'etc/hostname'), 'utf8')).length > 0, 'the image has its own /etc/hostname, which the placeholder hides');
          assert.deepEqual(await store.engine.diff(c.ID), [], 'none of it is the container\'s own change');
        } finally {
          await store.engine.unmount(c.ID);
          await store.engine.rm(c.ID);
        }
      });

      it('a layer shared by two images exists once; system df counts it as shared', async () => {
        await store.engine.load(createReadStream(minbaseTar));
        const layers = await readdir(join(store.root, 'image', driver, 'layerdb', 'sha256'));
        assert.equal(layers.length, 3, 'minbase reuses the base layer of debian:bookworm');
        const du = await store.engine.df();
        const minbase = du.Images.find((i) => i.RepoTags.includes('debian:minbase'))!;
        const full = du.Images.find((i) => i.RepoTags.includes('debian:bookworm'))!;
        assert.equal(minbase.SharedSize, minbase.Size, 'all of minbase is shared');
        assert.equal(full.SharedSize, minbase.Size);
        assert.equal(du.LayersSize, full.Size, 'the shared layer is counted once');
      });
    });
  }
});

describe('interop with a real dockerd', () => {
  it('a docker save archive loads, and its tree equals umoci unpack of the image', async () => {
    const work = await mkdtemp(join(tmpdir(), 'strata-dockerd-'));
    const d = await startDockerd();
    const store = await openTestStore(ENGINE_DRIVERS[0]!);
    try {
      const img = await busyboxImage();
      const reference = await umociUnpack(img.layout, img.ref, join(work, 'bundle'));
      await loadIntoDocker(d, await dockerArchive(img.layout, img.ref, join(work, 'in.tar'), 'busybox:latest'));
      const saved = join(work, 'docker-saved.tar');
      const r = await d.docker(['save', '-o', saved, 'busybox:latest']);
      assert.equal(r.code, 0, r.stderr);
      assert.deepEqual(await store.engine.load(createReadStream(saved)), ['Loaded image: busybox:latest']);
      await mergedEqualsUmoci(store.engine, 'busybox', reference);
    } finally {
      await store.dispose();
      await d.stop();
      await rm(work, { recursive: true, force: true });
    }
  });
});

describe('limits and concurrency', () => {
  for (const driver of ENGINE_DRIVERS) {
    it(`${driver}: 125 layers work, a 126th is refused with a clear error`, async () => {
      const store = await openTestStore(driver);
      const work = await mkdtemp(join(tmpdir(), 'strata-deep-'));
      try {
        await writeFile(join(work, 'f0'), 'layer 0\n');
        await run('tar', ['-C', work, '-cf', join(work, 'base.tar'), 'f0']);
        await store.engine.import(createReadStream(join(work, 'base.tar')), { reference: 'deep:1' });
        for (let i = 2; i <= 125; i++) {
          const c = await store.engine.create({ image: `deep:${i - 1}` });
          const root = await store.engine.mount(c.ID);
          await writeFile(join(root, `f${i - 1}`), `layer ${i - 1}\n`);
          await store.engine.unmount(c.ID);
          await store.engine.commit(c.ID, { reference: `deep:${i}` });
          await store.engine.rm(c.ID);
        }
        const top = await store.engine.create({ image: 'deep:125' });
        const root = await store.engine.mount(top.ID);
        assert.equal((await readdir(root)).filter((n) => n.startsWith('f')).length, 125, 'every layer visible through 125 lowers');
        await store.engine.unmount(top.ID);
        const before = await storeListing(store.root);
        await assert.rejects(store.engine.commit(top.ID, { reference: 'deep:126' }), (e: Error & { code: string }) => e.code === 'ErrLimit' && /max depth exceeded.*125/.test(e.message));
        assert.deepEqual(await storeListing(store.root), before);
      } finally {
        await store.dispose();
        await rm(work, { recursive: true, force: true });
      }
    });
  }

  it('two strata processes loading and creating on one data-root at once leave it consistent', async () => {
    const store = await openTestStore(ENGINE_DRIVERS[0]!);
    const work = await mkdtemp(join(tmpdir(), 'strata-concurrent-'));
    const bin = resolve(import.meta.dirname, '../../bin/strata');
    try {
      const img = await busyboxImage();
      const tar = await dockerArchive(img.layout, img.ref, join(work, 'bb.tar'), 'busybox:latest');
      const strata = (args: string[]) => run(bin, ['--data-root', store.root, '-s', ENGINE_DRIVERS[0]!, ...args]);
      const loads = await Promise.all([strata(['load', '-i', tar]), strata(['load', '-i', tar]), strata(['load', '-i', tar])]);
      for (const l of loads) assert.equal(l.code, 0, l.stderr);
      const creates = await Promise.all(Array.from({ length: 8 }, (_, i) => strata(['create', '--name', `c${i % 4}`, 'busybox'])));
      assert.equal(creates.filter((c) => c.code === 0).length, 4, 'each name taken exactly once');
      for (const c of creates.filter((c) => c.code !== 0)) assert.match(c.stderr, /already in use/);
      const engine = await store.reopen();
      assert.equal((await engine.images()).length, 1);
      assert.equal((await readdir(join(store.root, 'image', ENGINE_DRIVERS[0]!, 'layerdb', 'sha256'))).length, 1);
      assert.equal((await readdir(join(store.root, 'image', ENGINE_DRIVERS[0]!, 'layerdb', 'tmp'))).length, 0, 'no registration left half-done');
      assert.equal((await engine.containers({ all: true })).length, 4);
      const driverDirs = (await readdir(join(store.root, ENGINE_DRIVERS[0]!))).filter((n) => n !== 'l' && n !== 'dir' && !n.startsWith('.'));
      if (ENGINE_DRIVERS[0] === 'overlay2') assert.equal(driverDirs.length, 1 + 4 * 2, 'one image layer, init + rw per container: the losers of each race left nothing');
    } finally {
      await store.dispose();
      await rm(work, { recursive: true, force: true });
    }
  });
});
