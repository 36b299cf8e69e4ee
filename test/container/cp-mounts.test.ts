import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, existsSync } from 'node:fs';
import { chmod, lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { randomBytes } from 'node:crypto';
import { busyboxImage, dockerArchive } from '../fixtures/images.js';
import { runOk } from '../fixtures/run.js';
import { collect, ENGINE_DRIVERS, openTestStore, storeListing, type TestStore } from '../helpers/engine.js';
import type { StrataError } from '../../src/errors.js';

/** Every path below `dir` with its kind and content, to show a refused copy changed nothing (directories included). */
async function contents(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(d: string): Promise<void> {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      const st = await lstat(p);
      out.push(`${relative(dir, p)} ${st.mode.toString(8)} ${st.isFile() ? await readFile(p, 'utf8') : ''}`);
      if (e.isDirectory()) await walk(p);
    }
  }
  await walk(dir);
  return out.sort();
}

// aufs: the container's part of a copy goes through its union (openFs), the volumes' parts onto the host.
for (const driver of [...ENGINE_DRIVERS, 'aufs']) {
  describe(`cp across mount points (${driver})`, () => {
    let store: TestStore;
    let work: string;
    let bind: string;
    let nested: string;
    let vol: string;
    let n = 0;

    before(async () => {
      work = await mkdtemp(join(tmpdir(), 'strata-cpm-'));
      const img = await busyboxImage();
      const archive = await dockerArchive(img.layout, img.ref, join(work, 'busybox.tar'), 'busybox:latest');
      store = await openTestStore(driver);
      await store.engine.load(createReadStream(archive));
      bind = join(work, 'bind');
      nested = join(work, 'nested');
      await mkdir(bind);
      await mkdir(nested);
      // A named volume and a bind below /dir, and a bind inside the volume's destination.
      await store.engine.create({ image: 'busybox', name: 'mc', mounts: { volumes: ['cpmvol:/dir/data', `${bind}:/dir/bindpt`, `${nested}:/dir/data/conf`] } });
      vol = (await store.engine.inspectVolume('cpmvol')).Mountpoint;
    });
    after(async () => {
      await store?.dispose();
      await rm(work, { recursive: true, force: true });
    });

    const e = () => store.engine;
    const fresh = () => join(work, `out-${n++}`);
    const tarNames = async (c: string, p: string) => {
      const tar = join(work, `list-${n++}.tar`);
      await writeFile(tar, await collect(await e().copyFromTar(c, p)));
      return (await runOk('tar', ['-tf', tar])).stdout.trim().split('\n').map((l) => l.replace(/^\.\//, '').replace(/\/$/, '')).sort();
    };

    async function rejectsUnchanged(op: () => Promise<unknown>, code: string, pattern: RegExp, dirs: string[]): Promise<void> {
      const before = [await storeListing(store.root), ...(await Promise.all(dirs.map(contents)))];
      await assert.rejects(op(), (err: StrataError) => {
        assert.equal(err.code, code, `${err.code}: ${err.message}`);
        assert.match(err.message, pattern);
        assert.ok(!err.message.includes('\n'), 'one line');
        return true;
      });
      assert.deepEqual([await storeListing(store.root), ...(await Promise.all(dirs.map(contents)))], before, 'store, volumes and binds exactly as before');
    }

    it('into the container: what lies under a mount goes to the volume or bind source, nested mounts included', async () => {
      const tree = join(work, 'tree');
      await mkdir(join(tree, 'dir/data/conf'), { recursive: true });
      await mkdir(join(tree, 'dir/bindpt'));
      await writeFile(join(tree, 'dir/a'), 'A\n');
      await writeFile(join(tree, 'dir/data/x'), 'X\n');
      await writeFile(join(tree, 'dir/data/conf/c'), 'C\n');
      await writeFile(join(tree, 'dir/bindpt/y'), 'Y\n');
      await chmod(join(tree, 'dir/data'), 0o750);
      await e().copyTo('mc', '/', { path: join(tree, 'dir') });
      assert.equal(await readFile(join(vol, 'x'), 'utf8'), 'X\n');
      assert.equal(await readFile(join(nested, 'c'), 'utf8'), 'C\n', 'the bind inside the volume, not the volume');
      assert.ok(!existsSync(join(vol, 'conf/c')));
      assert.equal(await readFile(join(bind, 'y'), 'utf8'), 'Y\n');
      assert.equal((await stat(vol)).mode & 0o7777, 0o750, "the copied directory's attributes land on the volume's root");
      const diff = (await e().diff('mc')).map((ch) => `${ch.kind} ${ch.path}`).sort();
      assert.deepEqual(diff, ['A /dir', 'A /dir/a'], 'only what is outside the mounts is in the layer');

      // A tar on stdin into /dir, and a copy into / with `tree/.`: the same routing.
      const tar = join(work, 'in.tar');
      await mkdir(join(work, 'stdin/data/conf'), { recursive: true });
      await mkdir(join(work, 'stdin/bindpt'));
      await writeFile(join(work, 'stdin/data/z'), 'Z\n');
      await writeFile(join(work, 'stdin/data/conf/cc'), 'CC\n');
      await writeFile(join(work, 'stdin/bindpt/w'), 'W\n');
      await writeFile(join(work, 'stdin/top'), 'T\n');
      await runOk('tar', ['-C', join(work, 'stdin'), '-cf', tar, '.']);
      await e().copyTo('mc', '/dir', { tar: createReadStream(tar) });
      assert.equal(await readFile(join(vol, 'z'), 'utf8'), 'Z\n');
      assert.equal(await readFile(join(nested, 'cc'), 'utf8'), 'CC\n');
      assert.equal(await readFile(join(bind, 'w'), 'utf8'), 'W\n');
      assert.equal((await stat(join(bind, 'w'))).uid, 0, 'owned by the container root without -a');
      await e().copyTo('mc', '/', { path: tree + '/.' });
      assert.deepEqual((await readdir(vol)).sort(), ['x', 'z']);
      assert.deepEqual((await e().diff('mc')).map((ch) => `${ch.kind} ${ch.path}`).sort(), ['A /dir', 'A /dir/a', 'A /dir/top']);
    });

    it('out of the container: the tree switches to the mount sources at mount points, with their roots as they are', async () => {
      // Something in the layer under the mount point: hidden by the volume, as in the container.
      const rootfs = await e().mount('mc');
      try {
        await mkdir(join(rootfs, 'dir/data'), { recursive: true });
        await writeFile(join(rootfs, 'dir/data/hidden'), 'H\n');
      } finally {
        await e().unmount('mc');
      }
      await symlink('/etc', join(vol, 'toetc'));
      const out = fresh();
      await e().copyFrom('mc', '/dir', out, { archive: true });
      assert.equal(await readFile(join(out, 'a'), 'utf8'), 'A\n');
      assert.equal(await readFile(join(out, 'data/x'), 'utf8'), 'X\n');
      assert.equal(await readFile(join(out, 'data/conf/c'), 'utf8'), 'C\n');
      assert.equal(await readFile(join(out, 'bindpt/y'), 'utf8'), 'Y\n');
      assert.ok(!existsSync(join(out, 'data/hidden')), 'the layer under the volume is not shown');
      assert.equal(await readlink(join(out, 'data/toetc')), '/etc', 'a symlink in the volume is copied as a link');
      const [got, want] = [await stat(join(out, 'data')), await stat(vol)];
      // Times to the second: the copy travels as a tar, whose times Docker's archive (and strata's) truncate.
      const sec = (ms: number) => Math.floor(ms / 1000);
      assert.deepEqual([got.mode, got.uid, got.gid, sec(got.mtimeMs)], [want.mode, want.uid, want.gid, sec(want.mtimeMs)], "the volume's _data attributes");
      const gotB = await stat(join(out, 'bindpt'));
      assert.equal(sec(gotB.mtimeMs), sec((await stat(bind)).mtimeMs), "the bind source's attributes");

      assert.deepEqual(
        (await tarNames('mc', '/dir')).filter((x) => !x.startsWith('dir/data/toetc')),
        ['dir', 'dir/a', 'dir/bindpt', 'dir/bindpt/w', 'dir/bindpt/y', 'dir/data', 'dir/data/conf', 'dir/data/conf/c', 'dir/data/conf/cc', 'dir/data/x', 'dir/data/z', 'dir/top'],
      );
      // From / too, and `dir/.`.
      const all = fresh();
      await e().copyFrom('mc', '/', all);
      assert.equal(await readFile(join(all, 'dir/data/conf/cc'), 'utf8'), 'CC\n');
      assert.ok(existsSync(join(all, 'bin/busybox')) && !existsSync(join(all, 'dir/data/hidden')));
      const dot = fresh();
      await mkdir(dot);
      await e().copyFrom('mc', '/dir/.', dot);
      assert.deepEqual((await readdir(dot)).sort(), ['a', 'bindpt', 'data', 'top']);
      assert.equal(await readFile(join(dot, 'data/z'), 'utf8'), 'Z\n');
      // A symlink inside the volume pointing to /etc is the container's /etc, never the host's.
      assert.match(await readFile(await (async () => {
        const p = fresh();
        await e().copyFrom('mc', '/dir/data/toetc/passwd', p);
        return p;
      })(), 'utf8'), /^root:x:0:0:/);
      const marker = `strata-cpm-${randomBytes(6).toString('hex')}`;
      await writeFile(join(work, marker), 'M\n');
      await e().copyTo('mc', '/dir/data/toetc/', { path: join(work, marker) });
      assert.ok(!existsSync(join('/etc', marker)), 'nothing written on the host');
      assert.ok((await tarNames('mc', '/etc')).includes(`etc/${marker}`));
    });

    it('refusals change nothing: read-only volume or bind below the destination, a mount point replaced by a file', async () => {
      const robind = join(work, 'robind');
      await mkdir(robind);
      await writeFile(join(robind, 'keep'), 'K\n');
      await e().create({ image: 'busybox', name: 'roc', mounts: { volumes: ['cpmro:/dir/ro:ro', 'cpmrw:/dir/rw', `${robind}:/dir/rob:ro`] } });
      const ro = (await e().inspectVolume('cpmro')).Mountpoint;
      const rw = (await e().inspectVolume('cpmrw')).Mountpoint;
      const dirs = [ro, rw, robind];
      const mk = async (files: Record<string, string>) => {
        const t = fresh();
        for (const [f, body] of Object.entries(files)) {
          await mkdir(join(t, f, '..'), { recursive: true });
          await writeFile(join(t, f), body);
        }
        return t;
      };
      const intoRo = await mk({ 'dir/a': 'A\n', 'dir/rw/x': 'X\n', 'dir/ro/x': 'X\n' });
      await rejectsUnchanged(() => e().copyTo('roc', '/', { path: join(intoRo, 'dir') }), 'ErrForbidden', /cannot copy to roc:\/dir\/ro: mounted volume is marked read-only/, dirs);
      const intoRob = await mk({ 'rw/x': 'X\n', 'rob/x': 'X\n' });
      await rejectsUnchanged(() => e().copyTo('roc', '/dir', { path: intoRob + '/.' }), 'ErrForbidden', /roc:\/dir\/rob: mounted volume is marked read-only/, dirs);
      const tar = join(work, 'ro.tar');
      await runOk('tar', ['-C', intoRo, '-cf', tar, 'dir/rw', 'dir/ro']);
      await rejectsUnchanged(() => e().copyTo('roc', '/', { tar: createReadStream(tar) }), 'ErrForbidden', /mounted volume is marked read-only/, dirs);
      const fileOnMount = await mk({ 'dir/a': 'A\n', 'dir/rw': 'not a directory\n' });
      await rejectsUnchanged(() => e().copyTo('roc', '/', { path: join(fileOnMount, 'dir') }), 'ErrInvalidArgument', /cannot copy dir\/rw: it would replace the mount point \/dir\/rw/, dirs);
      assert.deepEqual(await e().diff('roc'), []);
      // The read-write part alone goes through.
      const ok = await mk({ 'dir/a': 'A\n', 'dir/rw/x': 'X\n' });
      await e().copyTo('roc', '/', { path: join(ok, 'dir') });
      assert.equal(await readFile(join(rw, 'x'), 'utf8'), 'X\n');
      await e().rm('roc', { volumes: true });
      await e().removeVolume('cpmro');
      await e().removeVolume('cpmrw');
    });
  });
}
