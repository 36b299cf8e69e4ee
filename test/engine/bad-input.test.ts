import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { mkdtemp, mkdir, rm, writeFile, stat, truncate, copyFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { createHash, randomBytes } from 'node:crypto';
import { busyboxImage, dockerArchive } from '../fixtures/images.js';
import { runOk } from '../fixtures/run.js';
import { ENGINE_DRIVERS, openTestStore, storeListing, type TestStore } from '../helpers/engine.js';
import type { StrataError } from '../../src/errors.js';

const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

/** A docker-save style archive written by GNU tar from a directory we lay out by hand. */
async function handmadeArchive(dir: string, out: string, opts: { diffID?: string; layerMediaType?: string }): Promise<string> {
  const rootfs = join(dir, 'rootfs');
  await mkdir(join(rootfs, 'etc'), { recursive: true });
  await writeFile(join(rootfs, 'etc/hello'), 'hello\n');
  const layerTar = join(dir, 'layer.tar');
  await runOk('tar', ['-C', rootfs, '--numeric-owner', '-cf', layerTar, '.']);
  const { readFile } = await import('node:fs/promises');
  const layer = await readFile(layerTar);
  const layerHex = sha(layer);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: [opts.diffID ?? `sha256:${layerHex}`] }, history: [{ created_by: 'handmade' }] }));
  const configHex = sha(config);
  const root = join(dir, 'archive');
  await mkdir(join(root, 'blobs/sha256'), { recursive: true });
  await writeFile(join(root, 'blobs/sha256', layerHex), layer);
  await writeFile(join(root, 'blobs/sha256', configHex), config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${configHex}`, size: config.length },
      layers: [{ mediaType: opts.layerMediaType ?? 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${layerHex}`, size: layer.length }],
    }),
  );
  const manifestHex = sha(manifest);
  await writeFile(join(root, 'blobs/sha256', manifestHex), manifest);
  await writeFile(join(root, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  await writeFile(
    join(root, 'index.json'),
    JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${manifestHex}`, size: manifest.length, annotations: { 'org.opencontainers.image.ref.name': 'handmade:1' } }] }),
  );
  await runOk('tar', ['-C', root, '-cf', out, '.']);
  return out;
}

for (const driver of ENGINE_DRIVERS) {
  describe(`bad input leaves the store as it was (${driver})`, () => {
    let store: TestStore;
    let work: string;
    let good: string;

    before(async () => {
      work = await mkdtemp(join(tmpdir(), 'strata-bad-'));
      const img = await busyboxImage();
      good = await dockerArchive(img.layout, img.ref, join(work, 'good.tar'), 'busybox:latest');
      store = await openTestStore(driver);
      await store.engine.load(createReadStream(good));
    });
    after(async () => {
      await store?.dispose();
      await rm(work, { recursive: true, force: true });
    });

    async function rejectsCleanly(op: () => Promise<unknown>, code: string, pattern: RegExp): Promise<void> {
      const before = await storeListing(store.root);
      await assert.rejects(op(), (e: StrataError) => {
        assert.equal(e.code, code, `${e.code}: ${e.message}`);
        assert.match(e.message, pattern);
        assert.ok(!e.message.includes('\n'), 'one line');
        return true;
      });
      assert.deepEqual(await storeListing(store.root), before, 'the store is exactly as before');
    }

    it('garbage instead of an archive', async () => {
      await rejectsCleanly(() => store.engine.load(Readable.from([randomBytes(10_000)])), 'ErrCorrupt', /tar|archive/i);
    });

    it('a truncated archive', async () => {
      const cut = join(work, 'cut.tar');
      await copyFile(good, cut);
      await truncate(cut, Math.floor((await stat(cut)).size / 2));
      await rejectsCleanly(() => store.engine.load(createReadStream(cut)), 'ErrCorrupt', /truncated|unexpected end|missing/i);
    });

    it('a layer whose content does not match its diff_id', async () => {
      const dir = join(work, 'mismatch');
      const tar = await handmadeArchive(dir, join(work, 'mismatch.tar'), { diffID: `sha256:${'0'.repeat(64)}` });
      await rejectsCleanly(() => store.engine.load(createReadStream(tar)), 'ErrDigestMismatch', /diff_id|digest/);
    });

    it('an unknown layer media type', async () => {
      const dir = join(work, 'mediatype');
      const tar = await handmadeArchive(dir, join(work, 'mediatype.tar'), { layerMediaType: 'application/x-strata-unknown' });
      await rejectsCleanly(() => store.engine.load(createReadStream(tar)), 'ErrUnsupported', /media type/i);
    });

    it('a handmade archive that is right loads (the fixtures above fail for the reason they name)', async () => {
      const dir = join(work, 'right');
      const tar = await handmadeArchive(dir, join(work, 'right.tar'), {});
      assert.deepEqual(await store.engine.load(createReadStream(tar)), ['Loaded image: handmade:1']);
      await store.engine.rmi('handmade:1');
    });

    it('an invalid reference', async () => {
      await rejectsCleanly(() => store.engine.tag('busybox', 'Bad/Name:x'), 'ErrInvalidArgument', /invalid reference format/);
      await rejectsCleanly(() => store.engine.import(createReadStream(good), { reference: 'UPPER:case' }), 'ErrInvalidArgument', /invalid reference format/);
    });

    it('a missing image or container', async () => {
      await rejectsCleanly(() => store.engine.create({ image: 'nothere:1' }), 'ErrNotFound', /No such image: nothere:1/);
      await rejectsCleanly(() => store.engine.diff('ghost'), 'ErrNotFound', /No such container: ghost/);
      await rejectsCleanly(() => store.engine.rmi('ghost:1'), 'ErrNotFound', /No such image/);
    });

    it('a container name already in use', async () => {
      await store.engine.create({ image: 'busybox', name: 'taken' });
      await rejectsCleanly(() => store.engine.create({ image: 'busybox', name: 'taken' }), 'ErrConflict', /already in use/);
      await store.engine.rm('taken');
    });
  });
}
