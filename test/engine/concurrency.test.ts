import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import type { Stores } from '../../src/stores.js';
import { chainIDs } from '../../src/layer/chain-id.js';
import { runOk } from '../fixtures/run.js';
import { ENGINE_DRIVERS, openTestStore, type TestStore } from '../helpers/engine.js';

const run = promisify(execFile);
const SECONDS = 8;

for (const driver of ENGINE_DRIVERS) {
  describe(`two processes on one data-root (${driver})`, () => {
    let store: TestStore;
    before(async () => {
      store = await openTestStore(driver);
    });
    after(async () => {
      await store?.dispose();
    });

    it(`importing, creating, writing through a mount, committing and removing in one process while another prunes, for ${SECONDS} s, leave every image with its layers and nothing half-made`, async () => {
      const tars: string[] = [];
      for (const v of ['a', 'b']) {
        const dir = join(store.root, '..', `${driver}-tree-${v}-${process.pid}`);
        await mkdir(join(dir, 'etc'), { recursive: true });
        await writeFile(join(dir, 'etc', 'variant'), `${v}\n`);
        await runOk('tar', ['-C', dir, '-cf', `${dir}.tar`, 'etc']);
        await rm(dir, { recursive: true });
        tars.push(`${dir}.tar`);
      }
      const worker = new URL('./concurrency-worker.ts', import.meta.url).pathname;
      const spawn = (role: string) => run(process.execPath, ['--import', 'tsx', worker, store.root, driver, role, [tars[0], tars[1], tars[0]].join(','), String(SECONDS)], { maxBuffer: 1 << 24 });
      try {
        const outs = await Promise.all([spawn('maker'), spawn('remover')]);
        const lines = outs.flatMap((o) => o.stdout.trim().split('\n')).map((l) => JSON.parse(l) as { what?: string; error?: string; done?: string; ops?: number });
        assert.deepEqual(lines.filter((l) => l.error !== undefined), [], 'only the failures one process can cause the other');
        const done = lines.filter((l) => l.done !== undefined);
        assert.equal(done.length, 2);
        assert.ok(done.every((l) => l.ops! > 10), `both processes did work: ${JSON.stringify(done)}`);
      } finally {
        for (const t of tars) await rm(t, { force: true });
      }
      // The store as a third process sees it: every image has its layers, every layer its driver directory, every
      // container its layers, and no registration or create was left half-done.
      const s = (store.engine as unknown as { s: Stores }).s;
      for (const img of await s.images.list()) {
        const top = chainIDs(img.config.rootfs.diff_ids).at(-1)!;
        assert.ok(await s.layers.has(top), `image ${img.id} has its top layer ${top}`);
      }
      for (const layer of await s.layers.list()) assert.ok(await s.driver.exists(layer.cacheID), `layer ${layer.chainID} has its driver directory`);
      for (const c of await s.containers.list()) {
        const m = await s.layers.getMount(c.ID);
        assert.ok(await s.driver.exists(m.mountID), `container ${c.ID} has its layer`);
      }
      assert.deepEqual(await readdir(join(store.root, 'image', driver, 'layerdb', 'tmp')), []);
    });
  });
}
