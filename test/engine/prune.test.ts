import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runOk } from '../fixtures/run.js';
import { ENGINE_DRIVERS, openTestStore, type TestStore } from '../helpers/engine.js';

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
  });
}
