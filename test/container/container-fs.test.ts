import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../../src/engine.js';
import type { ContainerFs } from '../../src/index.js';
import { exportTree } from '../../src/archive/export-changes.js';
import { readTar } from '../../src/archive/tar/tar-reader.js';
import { mountsUnder } from '../../src/driver/mount-table.js';
import { isStrataError } from '../../src/errors.js';
import { BUSYBOX_BIN, BUSYBOX_PATHS, BUSYBOX_XATTR } from '../fixtures/busybox-rootfs.js';
import { busyboxImage, dockerArchive } from '../fixtures/images.js';
import { unmountUnder } from '../fixtures/unmount.js';
import { createZfsPool, type ZfsPool } from '../fixtures/zfs-pool.js';
import { requireCap } from '../helpers/caps.js';
import { ALL_ENGINE_DRIVERS } from '../helpers/engine-drivers.js';
import { collect, storeListing } from '../helpers/engine.js';

/** Container filesystems that need no mount: aufs through its openFs; vfs and btrfs layers are plain directories. */
const MOUNT_FREE = new Set(['aufs', 'vfs', 'btrfs']);

let work = '';
let archive = '';
let zpool: ZfsPool | undefined;

before(async () => {
  work = await mkdtemp(join(tmpdir(), 'strata-cfs-'));
  const img = await busyboxImage();
  archive = await dockerArchive(img.layout, img.ref, join(work, 'busybox.tar'), 'busybox:latest');
});
after(async () => {
  await zpool?.close();
  unmountUnder(work);
  await rm(work, { recursive: true, force: true });
});

/** Every entry of a tar as one comparable line (type, mode, owner, size, link, xattrs). */
async function tarListing(tar: AsyncIterable<Buffer> | Iterable<Buffer>): Promise<string[]> {
  const out: string[] = [];
  for await (const e of readTar(tar)) {
    const h = e.header;
    const x = [...h.xattrs].map(([k, v]) => `${k}=${v.toString()}`).join(',');
    out.push(`${h.type} ${h.name} ${h.mode.toString(8)} ${h.uid}:${h.gid} ${h.size} ${h.linkname} ${x}`);
    if (h.type === 'file' && h.size > 0) await collect(e.body());
  }
  return out;
}

const rejectsCode = (p: Promise<unknown>, code: string) => assert.rejects(p, (e: NodeJS.ErrnoException) => e.code === code);

for (const d of ALL_ENGINE_DRIVERS) {
  describe(`container.fs (${d.name})`, () => {
    it('reads the image, writes land in the container layer, diff and commit see exactly them, close leaves no mount', async (t: TestContext) => {
      if (!requireCap(t, d.what, d.have)) return;
      const tmp = await mkdtemp(join(work, `${d.name}-`));
      if (d.name === 'zfs') zpool ??= await createZfsPool('512M');
      const root = join(tmp, 'data');
      const engine = await Engine.open({ dataRoot: root, storageDriver: d.name, storageOpts: d.opts(tmp, zpool) });
      try {
        await engine.load(createReadStream(archive));
        await engine.create({ image: 'busybox', name: 'c1' });
        const mountsBefore = mountsUnder(root);
        // (zfs-fuse mounts a clone as it makes it, so a zfs container may be mounted before and not after.)
        const newMounts = () => mountsUnder(root).filter((m) => !mountsBefore.includes(m));

        const fs = await engine.containerFs('c1');
        if (MOUNT_FREE.has(d.name)) assert.deepEqual(mountsUnder(root), mountsBefore, 'a mount for a driver that needs none');
        // The image and the init layer, as a process in the container would read them.
        assert.ok(((await fs.readFile(BUSYBOX_PATHS.busybox)) as Buffer).equals(await readFile(BUSYBOX_BIN)));
        assert.equal(await fs.readlink(BUSYBOX_PATHS.absSymlink), '/etc/passwd');
        const passwd = await fs.readFile('/etc/passwd', 'utf8');
        assert.equal(await fs.readFile(BUSYBOX_PATHS.symlink, 'utf8'), passwd);
        assert.ok((await fs.stat('/etc/hostname')).isFile());
        assert.ok((await fs.readdir('/etc')).includes('hosts'));

        await fs.writeFile('/new.txt', 'new\n');
        await fs.appendFile('/etc/passwd', 'extra:x:1:1::/:/bin/sh\n');
        await fs.rename(BUSYBOX_PATHS.emptyFile, '/etc/renamed');
        await fs.unlink(BUSYBOX_PATHS.setuid);
        await fs.mkdir('/data');
        await fs.writeFile('/data/x', 'X');
        await fs.symlink('new.txt', '/link');
        assert.equal(await fs.readFile('/link', 'utf8'), 'new\n');
        await fs.close();
        await fs.close(); // twice is harmless
        await rejectsCode(fs.readFile('/new.txt'), 'EBADF');
        assert.deepEqual(newMounts(), [], 'close leaves no mount behind');

        const changes = (await engine.diff('c1')).map((c) => `${c.kind} ${c.path}`).sort();
        assert.deepEqual(changes, [
          'A /data',
          'A /data/x',
          'A /etc/renamed',
          'A /link',
          'A /new.txt',
          'C /etc',
          'C /etc/passwd',
          'C /usr',
          'C /usr/bin',
          'D /etc/empty',
          'D /usr/bin/setuid-file',
        ]);

        await engine.commit('c1', { reference: 'committed:1' });
        await engine.create({ image: 'committed:1', name: 'c2' });
        const fs2 = await engine.containerFs('c2');
        try {
          assert.equal(await fs2.readFile('/new.txt', 'utf8'), 'new\n');
          assert.equal(await fs2.readFile('/etc/passwd', 'utf8'), passwd + 'extra:x:1:1::/:/bin/sh\n');
          assert.equal(await fs2.readFile('/data/x', 'utf8'), 'X');
          assert.equal(await fs2.readlink('/link'), 'new.txt');
          assert.ok((await fs2.stat('/etc/renamed')).isFile());
          await rejectsCode(fs2.stat(BUSYBOX_PATHS.emptyFile), 'ENOENT');
          await rejectsCode(fs2.stat(BUSYBOX_PATHS.setuid), 'ENOENT');
          assert.deepEqual(await engine.diff('c2'), []);

          // rm refuses a container whose filesystem is open, leaving the store as it was; rm -f closes it.
          const listing = await storeListing(root);
          await assert.rejects(engine.rm('c2'), (e: unknown) => isStrataError(e, 'ErrConflict') && /filesystem is open/.test(e.message));
          assert.deepEqual(await storeListing(root), listing);
          await engine.rm('c2', { force: true });
          await rejectsCode(fs2.readFile('/new.txt'), 'EBADF');
        } finally {
          await fs2.close();
        }
        assert.deepEqual(newMounts(), []);

        // A read-only root filesystem gives a read-only view.
        await engine.create({ image: 'busybox', name: 'ro', mounts: { readOnly: true } });
        const ro: ContainerFs = await engine.containerFs('ro');
        try {
          assert.equal(await ro.readFile('/etc/passwd', 'utf8'), passwd);
          await rejectsCode(ro.writeFile('/nope', 'x'), 'EROFS');
        } finally {
          await ro.close();
        }
        assert.deepEqual(await engine.diff('ro'), []);

        if (d.name === 'aufs') {
          // export reads the union (openFs): the same bytes as a tar of the container's mounted tree, xattrs included.
          const viaFs = await collect(await engine.export('c1'));
          const viaPath = await collect(exportTree(await engine.mount('c1')));
          await engine.unmount('c1');
          assert.ok(viaFs.equals(viaPath), 'export through openFs equals the tar of the mounted tree');
          const listing = await tarListing([viaFs]);
          assert.ok(listing.some((l) => l.startsWith('file etc/xattr-file ') && l.endsWith(`${BUSYBOX_XATTR.name}=${BUSYBOX_XATTR.value}`)), 'xattrs exported');
          assert.ok(listing.some((l) => l.startsWith('file new.txt 644 0:0 4 ')));
          // cp out reads the union too: /etc as export shows it.
          const etc = await tarListing(await engine.copyFromTar('c1', '/etc'));
          assert.deepEqual(etc.sort(), listing.filter((l) => l.split(' ')[1]!.startsWith('etc/')).sort());
        }
        // engine.close() closes what is still open.
        const left = await engine.containerFs('c1');
        await engine.close();
        await rejectsCode(left.readFile('/new.txt'), 'EBADF');
        assert.deepEqual(newMounts(), []);
      } finally {
        await engine.close().catch(() => undefined);
        unmountUnder(tmp);
        await rm(tmp, { recursive: true, force: true });
      }
    });
  });
}
