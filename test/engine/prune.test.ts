import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runOk } from '../fixtures/run.js';
import { ENGINE_DRIVERS, openTestStore, storeListing, type TestStore } from '../helpers/engine.js';
import { isStrataError } from '../../src/errors.js';
import { publishImage } from '../../src/image/publish-image.js';
import type { Stores } from '../../src/stores.js';

for (const driver of ENGINE_DRIVERS) {
  describe(`image prune and system prune (${driver})`, () => {
    let store: TestStore;
    let work: string;
    const importTar = async (name: string, content: string, ref?: string) => {
      const dir = join(work, name);
      await rm(dir, { recursive: true, force: true });
      await runOk('mkdir', ['-p', dir]);
      await writeFile(join(dir, name), content);
      await runOk('tar', ['-C', dir, '-cf', `${dir}.tar`, name]);
      return store.engine.import(createReadStream(`${dir}.tar`), { reference: ref });
    };
    const layerCount = async () => (await readdir(join(store.root, 'image', driver, 'layerdb', 'sha256'))).length;

    before(async () => {
      work = await mkdtemp(join(tmpdir(), 'strata-prune-'));
      store = await openTestStore(driver);
    });
    after(async () => {
      await store?.dispose();
      await rm(work, { recursive: true, force: true });
    });

    it('image prune removes dangling images only; -a every image no container uses', async () => {
      await importTar('kept', 'kept\n', 'kept:1');
      const used = await importTar('used', 'used\n', 'used:1');
      await importTar('old', 'old v1\n', 'moving:1');
      await importTar('new', 'new v2\n', 'moving:1'); // moving:1 moves: the first image is now dangling
      const c = await store.engine.create({ image: 'used:1' });
      assert.equal((await store.engine.images({ dangling: true })).length, 1);
      assert.equal(await layerCount(), 4);
      const pruned = await store.engine.pruneImages();
      assert.equal(pruned.ImagesDeleted.filter((d) => 'Deleted' in d).length, 2, 'the image and its layer');
      assert.equal(pruned.SpaceReclaimed, 'old v1\n'.length);
      assert.equal(await layerCount(), 3);
      assert.deepEqual((await store.engine.images()).map((i) => i.RepoTags[0]).sort(), ['kept:1', 'moving:1', 'used:1']);
      const all = await store.engine.pruneImages({ all: true });
      assert.deepEqual(all.ImagesDeleted.filter((d) => 'Untagged' in d).map((d) => (d as { Untagged: string }).Untagged).sort(), ['kept:1', 'moving:1']);
      assert.deepEqual((await store.engine.images()).map((i) => i.Id), [used.id], 'the image a container uses stays');
      await store.engine.rm(c.ID);
    });

    it('system prune removes stopped containers, then the images they held with -a', async () => {
      const c = await store.engine.create({ image: 'used:1' });
      const root = await store.engine.mount(c.ID);
      await writeFile(join(root, 'written'), 'abc');
      await store.engine.unmount(c.ID);
      const r = await store.engine.prune({ all: true });
      assert.deepEqual(r.ContainersDeleted, [c.ID]);
      assert.ok(r.ImagesDeleted.some((d) => 'Untagged' in d && d.Untagged === 'used:1'));
      assert.equal(r.SpaceReclaimed, 3 + 'used\n'.length);
      assert.equal((await store.engine.images({ all: true })).length, 0);
      assert.equal(await layerCount(), 0);
      assert.equal((await store.engine.containers({ all: true })).length, 0);
    });

    it('system prune reaps what a crashed layer registration or create left in layerdb/tmp, never what a live process is making', async () => {
      const s = (store.engine as unknown as { s: Stores }).s;
      const tmpDir = join(store.root, 'image', driver, 'layerdb', 'tmp');
      const dead = spawnSync('true').pid!; // a process that has exited
      const intent = async (name: string, id: string, pid?: number) => {
        await s.driver.create(id, null);
        await mkdir(join(tmpDir, name));
        await writeFile(join(tmpDir, name, 'cache-id'), id);
        if (pid !== undefined) await writeFile(join(tmpDir, name, 'pid'), String(pid)); // as earlier versions wrote it
      };
      await intent(`crashed.${dead}`, 'crashed');
      await intent('older', 'older', dead);
      await intent(`making.${process.pid}`, 'making');
      await store.engine.prune({});
      assert.deepEqual(await readdir(tmpDir), [`making.${process.pid}`]);
      assert.deepEqual([await s.driver.exists('crashed'), await s.driver.exists('older'), await s.driver.exists('making')], [false, false, true]);
      await s.driver.remove('making');
      await rm(join(tmpDir, `making.${process.pid}`), { recursive: true });
    });

    it('a create waits for an image removal in progress, and then finds the image gone: no container, no layer left', async () => {
      const s = (store.engine as unknown as { s: Stores }).s;
      const img = await importTar('doomed', 'doomed\n', 'doomed:1');
      const before = await storeListing(store.root);
      let created: Promise<unknown> | undefined;
      let done = false;
      // This holder of the image lock plays an rmi in another process: it deletes the image and its layer.
      await s.images.lock(async () => {
        created = store.engine.create({ image: 'doomed:1' }).finally(() => (done = true));
        created.catch(() => undefined);
        await new Promise((r) => setTimeout(r, 150));
        assert.equal(done, false, 'the create ran while the image lock was held');
        await s.tags.delete('doomed', 'doomed:1');
        await s.images.delete(img.id);
        await s.layers.releaseUnreferenced(img.config.rootfs.diff_ids[0]!, new Set());
      });
      await assert.rejects(created!, (e) => isStrataError(e, 'ErrNotFound'));
      assert.equal((await store.engine.containers({ all: true })).filter((c) => c.Image === img.id).length, 0);
      assert.ok((await storeListing(store.root)).length < before.length, 'the image and its layer are gone');
      assert.deepEqual((await storeListing(store.root)).filter((p) => p.includes('mounts') || p.includes('containers/')), before.filter((p) => p.includes('mounts') || p.includes('containers/')));
    });

    it('a save racing with the removal of its image fails with ErrNotFound, not with a missing file', async () => {
      const dir = join(work, 'many');
      await mkdir(join(dir, 'd'), { recursive: true });
      for (let i = 0; i < 3000; i++) await writeFile(join(dir, 'd', `f${i}`), Buffer.alloc(2000, i));
      await runOk('tar', ['-C', dir, '-cf', `${dir}.tar`, 'd']);
      await store.engine.import(createReadStream(`${dir}.tar`), { reference: 'racing:1' });
      const saving = (await store.engine.save(['racing:1']))[Symbol.asyncIterator]();
      // Well into the layer's ~7.5 MB, then the image goes.
      for (let read = 0; read < 2 << 20; ) read += ((await saving.next()).value as Buffer).length;
      await store.engine.rmi('racing:1');
      await assert.rejects(
        (async () => {
          while (!(await saving.next()).done);
        })(),
        (e) => isStrataError(e, 'ErrNotFound') && /was removed while it was being read/.test(e.message),
      );
    });

    it('publishing an image and removing images exclude each other: an image whose layer a removal released is refused', async () => {
      const s = (store.engine as unknown as { s: Stores }).s;
      const a = await importTar('shared', 'shared\n', 'shared:1');
      // The config of a second image on the same layer (as a commit or load making it would have).
      const raw = Buffer.from(JSON.stringify({ ...a.config, created: '2026-01-02T03:04:05Z' }));
      // A prune waits while the lock is held (as by a publish in another process).
      let release!: () => void;
      const held = s.images.lock(() => new Promise<void>((r) => (release = r)));
      let pruned = false;
      const prune = store.engine.pruneImages({ all: true }).then((r) => ((pruned = true), r));
      await new Promise((r) => setTimeout(r, 150));
      assert.equal(pruned, false, 'prune ran while the image lock was held');
      release();
      await held;
      assert.deepEqual((await prune).ImagesDeleted.filter((d) => 'Deleted' in d).length, 2, 'the image and its layer');
      // The layer went with the pruned image: publishing the second image now fails and leaves nothing behind.
      const before = await storeListing(store.root);
      await assert.rejects(publishImage(s, raw, { named: () => Promise.reject(new Error('not reached')) }), (e) => isStrataError(e, 'ErrConflict') && /were removed while it was being made/.test(e.message));
      assert.deepEqual(await storeListing(store.root), before);
      assert.equal((await store.engine.images({ all: true })).length, 0);
    });
  });
}
