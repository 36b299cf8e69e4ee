// One of the processes of concurrency.test.ts: runs one role's operations on a shared data-root until a deadline,
// printing each unexpected failure as a JSON line. Expected failures are those another process can cause: an
// image or container gone (ErrNotFound), an image in use or its layers just removed (ErrConflict).
import { createReadStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { Engine } from '../../src/engine.js';
import { isStrataError } from '../../src/errors.js';

const [root, driver, role, tars, seconds] = process.argv.slice(2) as [string, string, 'maker' | 'remover', string, string];
const engine = await Engine.open({ dataRoot: root, storageDriver: driver });
const deadline = Date.now() + Number(seconds) * 1000;
let ops = 0;
const attempt = async (what: string, fn: () => Promise<unknown>): Promise<unknown> => {
  ops++;
  try {
    return await fn();
  } catch (e) {
    if (isStrataError(e, 'ErrNotFound') || isStrataError(e, 'ErrConflict')) return undefined;
    console.log(JSON.stringify({ what, error: String((e as Error).stack ?? e) }));
    return undefined;
  }
};
const variants = tars.split(',');
for (let i = 0; Date.now() < deadline; i++) {
  if (role === 'maker') {
    // Two of the variants are the same tar: their imports share a layer, as two pulls of one base would.
    const tag = `m:${process.pid}-${i}`;
    await attempt('import', () => engine.import(createReadStream(variants[i % variants.length]!), { reference: tag }));
    const c = (await attempt('create', () => engine.create({ image: tag }))) as { ID: string } | undefined;
    if (c) {
      const root = (await attempt('mount', () => engine.mount(c.ID))) as string | undefined;
      if (root !== undefined) {
        // The container may be removed, and its view unmounted, by the other process meanwhile.
        await attempt('write', () => writeFile(`${root}/etc/written-${i}`, 'x').catch((e) => (e.code === 'ENOENT' ? undefined : Promise.reject(e))));
        await attempt('unmount', () => engine.unmount(c.ID));
      }
      await attempt('commit', () => engine.commit(c.ID, { reference: `c:${process.pid}-${i}` }));
      await attempt('rm', () => engine.rm(c.ID, { force: true }));
    }
  } else {
    await attempt('prune images', () => engine.pruneImages({ all: true }));
    await attempt('system prune', () => engine.prune({ all: i % 2 === 0 }));
  }
}
await engine.close();
console.log(JSON.stringify({ done: role, ops }));
