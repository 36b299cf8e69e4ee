import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { createReadStream, existsSync, readFileSync } from 'node:fs';
import { chown, link, mkdir, mkdtemp, rm, symlink, utimes, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { constants } from 'node:fs';
import { Engine } from '../../src/engine.js';
import type { Stores } from '../../src/stores.js';
import type { Driver } from '../../src/driver/driver.js';
import { aufs } from '../../src/driver/aufs/aufs.js';
import { LayerStore } from '../../src/layer/layer-store.js';
import { ImageStore } from '../../src/image/image-store.js';
import { TagStore } from '../../src/image/tag-store.js';
import { ContainerStore } from '../../src/container/container-store.js';
import { LocalContentStore } from '../../src/content/local-content-store.js';
import { copyToContainer } from '../../src/container/container-cp.js';
import { readTar } from '../../src/archive/tar/tar-reader.js';
import { mountsUnder } from '../../src/driver/mount-table.js';
import { native } from '../../src/native/native.js';
import { runOk } from '../fixtures/run.js';
import { unmountUnder } from '../fixtures/unmount.js';
import { isRoot, requireCap } from '../helpers/caps.js';

/** Every entry of a tar, as a line: name, type, mode, owner, link target, nanosecond mtime (unless skipped), content digest. */
async function listing(tar: AsyncIterable<Buffer>, keep: (name: string) => boolean, noTimes: ReadonlySet<string>): Promise<string[]> {
  const out: string[] = [];
  for await (const e of readTar(tar)) {
    const h = e.header;
    const name = h.name.replace(/\/$/, '');
    if (!keep(name)) {
      if (h.type === 'file') for await (const _ of e.body());
      continue;
    }
    const hash = createHash('sha256');
    if (h.type === 'file') for await (const c of e.body()) hash.update(c);
    const time = noTimes.has(name) ? '-' : `${h.mtime.sec}.${h.mtime.nsec}`;
    out.push([name, h.type, h.mode.toString(8), `${h.uid}:${h.gid}`, h.linkname, time, hash.digest('hex').slice(0, 12)].join(' '));
  }
  return out;
}

/**
 * The union applier (aufs openFs, no mount) against the mount (the same aufs driver without openFs, so
 * cp goes through fuse-overlayfs and applyLayer): the same copies into two containers of one image give
 * the same `diff` and the same files, modes, owners, link targets, hardlinks, xattrs and times.
 */
test('cp into an aufs container: through the union and through the mount give the same result', async (t: TestContext) => {
  if (!requireCap(t, 'root and /dev/fuse (fuse-overlayfs mount to compare with)', isRoot && existsSync('/dev/fuse'))) return;
  const work = await mkdtemp(join(tmpdir(), 'strata-cp-union-'));
  const root = join(work, 'root');
  let engine: Engine | undefined;
  let driver: Driver | undefined;
  try {
    // An image with a file, a directory and a file that the copies replace by the other kind.
    const rootfs = join(work, 'rootfs');
    await mkdir(join(rootfs, 'data/old'), { recursive: true });
    await mkdir(join(rootfs, 'tmp'));
    await mkdir(join(rootfs, 'etc'));
    await writeFile(join(rootfs, 'data/old/inner'), 'inner\n');
    await writeFile(join(rootfs, 'data/f'), 'f\n');
    await writeFile(join(rootfs, 'etc/passwd'), 'root:x:0:0::/root:/bin/sh\n');
    const imageTar = join(work, 'rootfs.tar');
    await runOk('tar', ['--numeric-owner', '-C', rootfs, '-cf', imageTar, '.']);

    // What is copied: owners, setuid, a symlink, a hardlink, a fifo, an xattr, nanosecond times.
    const src = join(work, 'in');
    await mkdir(join(src, 'sub'), { recursive: true });
    await writeFile(join(src, 'a'), 'A\n');
    await writeFile(join(src, 'suid'), '#!/bin/sh\n');
    await chown(join(src, 'a'), 1000, 1001);
    await chmod(join(src, 'a'), 0o640);
    await chmod(join(src, 'suid'), 0o4755);
    await chmod(join(src, 'sub'), 0o750);
    await symlink('../a', join(src, 'sub/link'));
    await link(join(src, 'a'), join(src, 'sub/hard'));
    native.mknod(join(src, 'fifo'), constants.S_IFIFO | 0o644, 0, 0);
    native.lsetxattr(join(src, 'suid'), 'user.strata', Buffer.from('x'));
    for (const [p, s] of [['a', 1_600_000_000.123456], ['sub', 1_600_000_100.5], ['suid', 1_600_000_200.25], ['', 1_600_000_300.75]] as const) await utimes(join(src, p), s, s);
    native.lutimes(join(src, 'sub/link'), 1_600_000_400, 7, 1_600_000_400, 7);
    // A tar for stdin: a directory where the image has a file and a file where it has a directory.
    const stdinTree = join(work, 'stdin');
    await mkdir(join(stdinTree, 'f'), { recursive: true });
    await writeFile(join(stdinTree, 'f/x'), 'x\n');
    await writeFile(join(stdinTree, 'old'), 'now a file\n');
    const stdinTar = join(work, 'stdin.tar');
    await runOk('tar', ['--numeric-owner', '--mtime=@1600000500', '-C', stdinTree, '-cf', stdinTar, 'f', 'old']);

    engine = await Engine.open({ dataRoot: root, storageDriver: 'aufs' });
    await engine.import(createReadStream(imageTar), { reference: 'cpu:1' });
    const viaUnionID = (await engine.create({ image: 'cpu:1', name: 'viaunion' })).ID;
    const viaMountID = (await engine.create({ image: 'cpu:1', name: 'viamount' })).ID;

    // The same driver with no openFs: cp mounts the container with fuse-overlayfs and extracts there.
    driver = await aufs.init({ root, options: {} });
    const mounting = Object.assign(Object.create(driver) as Driver, { openFs: undefined });
    const s: Stores = {
      root,
      driver: mounting,
      layers: new LayerStore(root, mounting),
      images: new ImageStore(root, 'aufs'),
      tags: new TagStore(root, 'aufs'),
      containers: new ContainerStore(root),
      content: new LocalContentStore(root),
      events: new EventEmitter(),
    };
    await Promise.all([s.layers.init(), s.images.init(), s.containers.init()]);

    const copies = async (copy: (dst: string, source: { path: string } | { tar: AsyncIterable<Buffer> }, archive: boolean) => Promise<void>) => {
      await copy('/tmp', { path: src }, true);
      await copy('/tmp/plain', { path: src }, false);
      await copy('/etc/passwd', { path: join(src, 'a') }, false);
      await copy('/data', { tar: createReadStream(stdinTar) }, true);
    };
    await copies((dst, source, archive) => engine!.copyTo('viaunion', dst, source, { archive }));
    assert.deepEqual(mountsUnder(root), [], 'the union needs no mount');
    await copies((dst, source, archive) => copyToContainer(s, 'viamount', dst, source, { archive }));
    assert.deepEqual(mountsUnder(root), [], 'the mount is released');

    const diff = await engine.diff('viaunion');
    assert.deepEqual(diff, await engine.diff('viamount'));
    assert.deepEqual(
      diff.map((c) => `${c.kind} ${c.path}`).filter((l) => !l.startsWith('A /tmp/plain')),
      ['C /data', 'C /data/f', 'A /data/f/x', 'C /data/old', 'D /data/old/inner', 'C /etc', 'C /etc/passwd', 'C /tmp', 'A /tmp/in', 'A /tmp/in/a', 'A /tmp/in/fifo', 'A /tmp/in/sub', 'A /tmp/in/sub/hard', 'A /tmp/in/sub/link', 'A /tmp/in/suid'],
    );
    // The directories the copies wrote into carry the time of the write, not of the tar.
    const keep = (n: string) => n.startsWith('data') || n.startsWith('tmp') || n === 'etc/passwd';
    const noTimes = new Set(['data', 'tmp']);
    const viaUnion = await listing(await engine.export('viaunion'), keep, noTimes);
    const viaMount = await listing(await engine.export('viamount'), keep, noTimes);
    assert.deepEqual(viaUnion, viaMount);
    // Xattrs (which an export of a union of several layers does not read) on each container's own layer.
    const ownFile = (c: string, p: string) => join(root, 'aufs/diff', readFileSync(join(root, 'image/aufs/layerdb/mounts', c, 'mount-id'), 'utf8').trim(), p);
    for (const c of [viaUnionID, viaMountID]) assert.equal(native.lgetxattr(ownFile(c, 'tmp/in/suid'), 'user.strata')?.toString(), 'x');
    // A copy travels as a tar, whose times are whole seconds (as with Docker's archive).
    assert.ok(viaUnion.some((l) => l.startsWith('tmp/in/a file 640 1000:1001  1600000000.0 ')), viaUnion.join('\n'));
    assert.ok(viaUnion.some((l) => l.startsWith('tmp/plain/a file 640 0:0 ')), viaUnion.join('\n'));
    assert.ok(viaUnion.some((l) => /^tmp\/in\/sub\/hard hardlink \S+ \S+ tmp\/in\/a /.test(l)), viaUnion.join('\n'));
    assert.ok(viaUnion.some((l) => l.startsWith('tmp/in/sub/link symlink 777 1000:1001 ../a 1600000400.0 ') || l.startsWith('tmp/in/sub/link symlink 777 0:0 ../a 1600000400.0 ')), viaUnion.join('\n'));
    await driver.cleanup();
  } finally {
    await engine?.close();
    unmountUnder(work);
    await rm(work, { recursive: true, force: true });
  }
});

/** A tar stream with a `.wh.` name: a copy carries no deletions, the union refuses it and nothing is written. */
test('cp into an aufs container through the union refuses whiteout names', async () => {
  const work = await mkdtemp(join(tmpdir(), 'strata-cp-union-wh-'));
  let engine: Engine | undefined;
  try {
    const rootfs = join(work, 'rootfs');
    await mkdir(join(rootfs, 'etc'), { recursive: true });
    await writeFile(join(rootfs, 'etc/motd'), 'hi\n');
    const imageTar = join(work, 'rootfs.tar');
    await runOk('tar', ['--numeric-owner', '-C', rootfs, '-cf', imageTar, '.']);
    engine = await Engine.open({ dataRoot: join(work, 'root'), storageDriver: 'aufs' });
    await engine.import(createReadStream(imageTar), { reference: 'wh:1' });
    await engine.create({ image: 'wh:1', name: 'cw' });
    const tree = join(work, 'in');
    await mkdir(tree);
    await writeFile(join(tree, '.wh.motd'), '');
    await assert.rejects(engine.copyTo('cw', '/etc', { path: join(tree, '.wh.motd') }), /cannot carry \.wh\. names/);
    assert.deepEqual(await engine.diff('cw'), []);
  } finally {
    await engine?.close();
    await rm(work, { recursive: true, force: true });
  }
});
