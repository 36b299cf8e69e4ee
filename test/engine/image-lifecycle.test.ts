import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, existsSync, lstatSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile, mkdir, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { busyboxImage, dockerArchive, ociArchive, umociUnpack } from '../fixtures/images.js';
import { compareTrees } from '../fixtures/compare-tree.js';
import { runOk } from '../fixtures/run.js';
import { ENGINE_DRIVERS, openTestStore, collect, type TestStore } from '../helpers/engine.js';
import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';

/** Paths the init layer places (Docker's placeholders): they differ from the image by design. */
export const INIT_PATHS = ['/.dockerenv', '/etc/hosts', '/etc/hostname', '/etc/resolv.conf', '/etc/mtab', '/dev/console', '/dev/pts', '/dev/shm', '/proc', '/sys', '/dev', '/etc'];

for (const driver of ENGINE_DRIVERS) {
  describe(`images and containers on ${driver}`, () => {
    let store: TestStore;
    let work: string;
    let reference: string;
    let dockerTar: string;

    before(async () => {
      work = await mkdtemp(join(tmpdir(), 'strata-lifecycle-'));
      const img = await busyboxImage();
      reference = await umociUnpack(img.layout, img.ref, join(work, 'bundle'));
      dockerTar = await dockerArchive(img.layout, img.ref, join(work, 'busybox-docker.tar'), 'busybox:latest');
      store = await openTestStore(driver);
      const loaded = await store.engine.load(createReadStream(dockerTar));
      assert.deepEqual(loaded, ['Loaded image: busybox:latest']);
    });
    after(async () => {
      await store?.dispose();
      await rm(work, { recursive: true, force: true });
    });

    it('lists and inspects the loaded image as docker does', async () => {
      const images = await store.engine.images();
      assert.equal(images.length, 1);
      assert.deepEqual(images[0]!.RepoTags, ['busybox:latest']);
      const [inspected] = [await store.engine.inspectImage('busybox')];
      assert.equal(inspected.Id, images[0]!.Id);
      assert.equal(inspected.GraphDriver.Name, driver);
      assert.equal(inspected.RootFS.Type, 'layers');
      assert.equal(inspected.RootFS.Layers.length, 1);
      assert.ok(inspected.Size > 500_000, 'busybox content counted');
      assert.deepEqual((await store.engine.inspectImage('docker.io/library/busybox:latest')).Id, inspected.Id);
      assert.deepEqual((await store.engine.inspectImage(inspected.Id.slice(7, 19))).Id, inspected.Id);
    });

    it("a container's merged tree equals umoci's unpack of the same image", async () => {
      const c = await store.engine.create({ image: 'busybox', name: 'compare' });
      const root = await store.engine.mount(c.ID);
      try {
        const diffs = await compareTrees(root, reference, { ignore: INIT_PATHS });
        assert.deepEqual(diffs, []);
      } finally {
        await store.engine.unmount(c.ID);
        await store.engine.rm(c.ID);
      }
    });

    it("the seeds' demonstration: two containers, one file, each sees its own value", async () => {
      const a = await store.engine.create({ image: 'busybox', name: 'seed-a' });
      const b = await store.engine.create({ image: 'busybox', name: 'seed-b' });
      const ra = await store.engine.mount('seed-a');
      const rb = await store.engine.mount('seed-b');
      try {
        const original = await readFile(join(ra, 'etc/passwd'), 'utf8');
        await writeFile(join(ra, 'etc/passwd'), 'value-a\n');
        await writeFile(join(rb, 'etc/passwd'), 'value-b\n');
        assert.equal(await readFile(join(ra, 'etc/passwd'), 'utf8'), 'value-a\n');
        assert.equal(await readFile(join(rb, 'etc/passwd'), 'utf8'), 'value-b\n');
        // The image is unchanged: a third container sees the original.
        const c = await store.engine.create({ image: 'busybox', name: 'seed-c' });
        const rc = await store.engine.mount(c.ID);
        assert.equal(await readFile(join(rc, 'etc/passwd'), 'utf8'), original);
        await store.engine.unmount(c.ID);
        await store.engine.rm(c.ID);
        assert.deepEqual(await store.engine.diff('seed-a'), [
          { kind: 'C', path: '/etc' },
          { kind: 'C', path: '/etc/passwd' },
        ]);
        if (driver === 'overlay2') {
          // The file exists once per container upper directory; the image's data exists once on disk.
          const ia = await store.engine.inspectContainer('seed-a');
          const ib = await store.engine.inspectContainer('seed-b');
          assert.equal(await readFile(join(ia.GraphDriver.Data.UpperDir!, 'etc/passwd'), 'utf8'), 'value-a\n');
          assert.equal(await readFile(join(ib.GraphDriver.Data.UpperDir!, 'etc/passwd'), 'utf8'), 'value-b\n');
          assert.ok(!existsSync(join(ia.GraphDriver.Data.UpperDir!, 'bin/busybox')), 'the image is not copied into the container');
          const busyboxCopies = (await readdir(join(store.root, 'overlay2'))).filter((d) => existsSync(join(store.root, 'overlay2', d, 'diff/bin/busybox')));
          assert.equal(busyboxCopies.length, 1, 'image data exists once on disk');
          assert.equal(ia.GraphDriver.Data.LowerDir!.split(':').length, 2, 'lower: init layer + image layer');
        }
        const sized = await store.engine.containers({ all: true, size: true });
        const sa = sized.find((x) => x.Id === a.ID)!;
        assert.equal(sa.SizeRw, 'value-a\n'.length);
        assert.ok(sa.SizeRootFs! > sa.SizeRw!);
      } finally {
        await store.engine.unmount('seed-a');
        await store.engine.unmount('seed-b');
        await store.engine.rm(a.ID);
        await store.engine.rm(b.ID);
      }
    });

    it('commit: a new layer on top; deleted files stay in the lower layer; the image never shrinks', async () => {
      const c = await store.engine.create({ image: 'busybox', name: 'committer' });
      const root = await store.engine.mount(c.ID);
      try {
        await mkdir(join(root, 'data'));
        await writeFile(join(root, 'data/new.txt'), 'new\n');
        await rm(join(root, 'etc/group'));
        await rm(join(root, 'tmp'), { recursive: true });
      } finally {
        await store.engine.unmount(c.ID);
      }
      assert.deepEqual(await store.engine.diff(c.ID), [
        { kind: 'A', path: '/data' },
        { kind: 'A', path: '/data/new.txt' },
        { kind: 'C', path: '/etc' },
        { kind: 'D', path: '/etc/group' },
        { kind: 'D', path: '/tmp' },
      ]);
      const img = await store.engine.commit(c.ID, { reference: 'committed:1', message: 'my change', author: 'tester', changes: ['ENV FOO=bar', 'CMD ["echo","hi"]'] });
      const base = await store.engine.inspectImage('busybox');
      const child = await store.engine.inspectImage('committed:1');
      assert.equal(child.Id, img.id);
      assert.deepEqual(child.RootFS.Layers.slice(0, 1), base.RootFS.Layers);
      assert.equal(child.RootFS.Layers.length, 2);
      assert.equal(child.Parent, base.Id);
      assert.equal(child.Author, 'tester');
      assert.equal(child.Comment, 'my change');
      assert.ok((child.Config as { Env: string[] }).Env.includes('FOO=bar'));
      assert.deepEqual((child.Config as { Cmd: string[] }).Cmd, ['echo', 'hi']);
      assert.ok(child.Size >= base.Size, 'the image never shrinks');
      const history = await store.engine.history('committed:1');
      assert.equal(history[0]!.Comment, 'my change');
      assert.equal(history[0]!.Id, img.id);
      // A container of the new image sees the deletions; the base image still has the files.
      const d = await store.engine.create({ image: 'committed:1' });
      const rd = await store.engine.mount(d.ID);
      try {
        assert.equal(await readFile(join(rd, 'data/new.txt'), 'utf8'), 'new\n');
        assert.ok(!existsSync(join(rd, 'etc/group')));
        assert.ok(!existsSync(join(rd, 'tmp')));
      } finally {
        await store.engine.unmount(d.ID);
      }
      const e = await store.engine.create({ image: 'busybox' });
      const re = await store.engine.mount(e.ID);
      try {
        assert.ok(lstatSync(join(re, 'etc/group')).isFile());
      } finally {
        await store.engine.unmount(e.ID);
      }
      await store.engine.rm(d.ID);
      await store.engine.rm(e.ID);
      await store.engine.rm(c.ID);
    });

    it('save writes what skopeo and umoci read, byte-exact layers, and loads back to the same ids', async () => {
      const out = join(work, `saved-${driver}.tar`);
      await pipeline(await store.engine.save(['committed:1']), createWriteStream(out));
      const inspected = JSON.parse((await runOk('skopeo', ['inspect', '--raw', `docker-archive:${out}`])).stdout) as { layers: unknown[] };
      assert.equal(inspected.layers.length, 2);
      const layout = join(work, `oci-${driver}`);
      await runOk('skopeo', ['copy', `docker-archive:${out}`, `oci:${layout}:saved`]);
      const unpacked = await umociUnpack(layout, 'saved', join(work, `unpacked-${driver}`));
      const c = await store.engine.create({ image: 'committed:1' });
      const root = await store.engine.mount(c.ID);
      try {
        assert.deepEqual(await compareTrees(root, unpacked, { ignore: INIT_PATHS }), []);
      } finally {
        await store.engine.unmount(c.ID);
        await store.engine.rm(c.ID);
      }
      const other = await openTestStore(driver);
      try {
        assert.deepEqual(await other.engine.load(createReadStream(out)), ['Loaded image: committed:1']);
        assert.equal((await other.engine.inspectImage('committed:1')).Id, (await store.engine.inspectImage('committed:1')).Id);
      } finally {
        await other.dispose();
      }
      // OCI layout format: umoci reads it directly.
      const ociTar = join(work, `saved-oci-${driver}.tar`);
      await pipeline(await store.engine.save(['committed:1'], 'oci'), createWriteStream(ociTar));
      const ociDir = join(work, `ocidir-${driver}`);
      await mkdir(ociDir);
      await runOk('tar', ['-C', ociDir, '-xf', ociTar]);
      // As Docker 25+ writes it: ref.name holds the tag, io.containerd.image.name the full name.
      const unpacked2 = await umociUnpack(ociDir, '1', join(work, `unpacked2-${driver}`));
      assert.deepEqual(await compareTrees(unpacked2, unpacked), []);
    });

    it('OCI archives made by skopeo load', async () => {
      const img = await busyboxImage();
      const ociTar = await ociArchive(img.layout, img.ref, join(work, `bb-oci-${driver}.tar`));
      const other = await openTestStore(driver);
      try {
        const lines = await other.engine.load(createReadStream(ociTar));
        assert.equal(lines.length, 1);
        const imgs = await other.engine.images();
        assert.equal(imgs.length, 1);
        assert.equal(imgs[0]!.Id, (await store.engine.inspectImage('busybox')).Id);
      } finally {
        await other.dispose();
      }
    });

    it('rmi untags, refuses an image in use, deletes layers with the last image', async () => {
      await store.engine.tag('busybox', 'alias:1');
      assert.deepEqual(await store.engine.rmi('alias:1'), [{ Untagged: 'alias:1' }]);
      const c = await store.engine.create({ image: 'committed:1', name: 'user' });
      await assert.rejects(store.engine.rmi('committed:1'), (e: Error & { code: string }) => e.code === 'ErrConflict' && /must force/.test(e.message));
      await store.engine.rm(c.ID);
      const out = await store.engine.rmi('committed:1');
      assert.deepEqual(out[0], { Untagged: 'committed:1' });
      assert.ok(out.some((r) => 'Deleted' in r));
      const layersLeft = await readdir(join(store.root, 'image', driver, 'layerdb', 'sha256'));
      assert.equal(layersLeft.length, 1, "the committed layer went with its image; busybox's stayed");
      assert.equal((await store.engine.images()).length, 1);
    });

    it('export gives the container filesystem as a tar', async () => {
      const c = await store.engine.create({ image: 'busybox' });
      const tar = await collect(await store.engine.export(c.ID));
      const file = join(work, `export-${driver}.tar`);
      await writeFile(file, tar);
      const listing = (await runOk('tar', ['-tf', file])).stdout.split('\n');
      assert.ok(listing.some((l) => /(^|\/)bin\/busybox$/.test(l)));
      assert.ok(listing.some((l) => /(^|\/)\.dockerenv$/.test(l)));
      await store.engine.rm(c.ID);
    });
  });
}
