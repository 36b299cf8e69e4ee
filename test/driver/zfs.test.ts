import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { zfsDriver } from '../../src/driver/zfs/zfs.js';
import { ensureRemoveAll } from '../../src/driver/ensure-remove.js';
import { isMountPoint, mountsUnder } from '../../src/driver/mount-table.js';
import { native } from '../../src/native/native.js';
import { isErrno, isStrataError } from '../../src/errors.js';
import { isRoot, requireCap } from '../helpers/caps.js';
import { createZfsPool, hasZfsTools, type ZfsPool } from '../fixtures/zfs-pool.js';
import { driverSuite } from './driver-suite.js';

const canRun = (t: TestContext) => requireCap(t, 'root, /dev/fuse and zfs-fuse', isRoot && hasZfsTools);

let pool: ZfsPool | undefined;
before(async () => {
  if (isRoot && hasZfsTools) pool = await createZfsPool();
});
after(async () => {
  await pool?.close();
});

const zfsOut = (...args: string[]) => execFileSync('zfs', args, { encoding: 'utf8' }).trim();

let n = 0;
/** A fresh parent dataset per data-root: layer ids repeat between cases. */
function freshParent(): string {
  const name = `${pool!.name}/p${n++}`;
  execFileSync('zfs', ['create', name]);
  return name;
}

driverSuite('zfs (zfs-fuse, pool on a file)', (root) => zfsDriver.init({ root, options: { 'zfs.fsname': freshParent() } }), { mounts: true, require: canRun });

async function withTmp(t: TestContext, fn: (tmp: string) => Promise<void>): Promise<void> {
  if (!canRun(t)) return;
  const tmp = await mkdtemp(join(tmpdir(), 'strata-zfs-'));
  try {
    await fn(tmp);
  } finally {
    await ensureRemoveAll(tmp);
  }
}

async function expectError(p: Promise<unknown>, code: string, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isStrataError(e), String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, pattern);
    return true;
  });
}

describe('zfs specifics', () => {
  test("Docker's model: a dataset per layer, a child a clone of a deferred-destroy snapshot; metadata and status", (t) =>
    withTmp(t, async (tmp) => {
      const fsname = freshParent();
      const d = await zfsDriver.init({ root: join(tmp, 'data'), options: { 'zfs.fsname': fsname } });
      await d.create('A', null);
      const a = await d.get('A');
      assert.equal(a, join(tmp, 'data', 'zfs', 'graph', 'A'));
      assert.equal((await stat(a)).mode & 0o7777, 0o755);
      await writeFile(join(a, 'f'), 'from A');
      await d.put('A');
      assert.equal(isMountPoint(a), false);
      await d.create('B', 'A');
      assert.equal(zfsOut('get', '-H', '-o', 'value', 'origin', `${fsname}/B`), `${fsname}/A@B`);
      assert.equal(zfsOut('get', '-H', '-o', 'value', 'defer_destroy', `${fsname}/A@B`), 'on');
      assert.equal(await readFile(join(await d.get('B'), 'f'), 'utf8'), 'from A');
      assert.deepEqual(await d.metadata('B'), { Dataset: `${fsname}/B`, Mountpoint: join(tmp, 'data', 'zfs', 'graph', 'B') });
      // The layer store never removes a parent before its children; the driver refuses clearly if asked.
      await expectError(d.remove('A'), 'ErrInUse', /^zfs: layer A has child layers; remove them first$/);
      await d.remove('B');
      assert.equal(isMountPoint(join(tmp, 'data', 'zfs', 'graph', 'B')), false);
      assert.deepEqual(zfsOut('list', '-H', '-t', 'snapshot', '-o', 'name', '-r', fsname), '', 'the snapshot outlived its clone');
      await d.remove('A');
      assert.equal(zfsOut('list', '-H', '-o', 'name', '-r', fsname), fsname);

      const status = Object.fromEntries(await d.status());
      assert.equal(status.Zpool, pool!.name);
      assert.equal(status['Zpool Health'], 'ONLINE');
      assert.equal(status['Parent Dataset'], fsname);
      assert.match(status['Space Used By Parent']!, /^\d+$/);
      assert.match(status['Space Available']!, /^\d+$/);
      assert.equal(status['Parent Quota'], 'no');
      assert.equal(status.Compression, 'off');
      assert.equal(status.Checksum, 'on');
      execFileSync('zfs', ['set', 'compression=on', fsname]);
      assert.equal(Object.fromEntries(await d.status()).Compression, 'on');
      assert.deepEqual(mountsUnder(tmp), []);
    }));

  test('a clone is O(1): a child of a 2,000-file layer takes no space of its own', (t) =>
    withTmp(t, async (tmp) => {
      const fsname = freshParent();
      const d = await zfsDriver.init({ root: join(tmp, 'data'), options: { 'zfs.fsname': fsname } });
      await d.create('big', null);
      const view = await d.get('big');
      await Promise.all(Array.from({ length: 2000 }, (_, i) => writeFile(join(view, `f${i}`), Buffer.alloc(4096, i))));
      await d.put('big');
      await d.create('child', 'big');
      const used = Number(zfsOut('get', '-Hp', '-o', 'value', 'used', `${fsname}/child`));
      const parentUsed = Number(zfsOut('get', '-Hp', '-o', 'value', 'used', `${fsname}/big`));
      assert.ok(parentUsed > 2000 * 4096, `parent uses ${parentUsed}`);
      assert.ok(used < 256 * 1024, `the clone uses ${used} bytes`);
      assert.equal((await readdir(await d.get('child'))).length, 2000);
      await d.put('child');
    }));

  test('zfs-fuse limit: no extended attributes in any namespace (ENOTSUP)', (t) =>
    withTmp(t, async (tmp) => {
      const d = await zfsDriver.init({ root: join(tmp, 'data'), options: { 'zfs.fsname': freshParent() } });
      await d.create('A', null);
      const a = await d.get('A');
      try {
        await writeFile(join(a, 'f'), 'f');
        for (const name of ['user.x', 'trusted.overlay.opaque']) {
          assert.throws(() => native.lsetxattr(join(a, 'f'), name, Buffer.from('y')), (e: unknown) => isErrno(e, 'ENOTSUP'));
          assert.equal(native.lgetxattr(join(a, 'f'), name), null);
        }
      } finally {
        await d.put('A');
      }
    }));

  test('a data-root on a zfs dataset needs no zfs.fsname', (t) =>
    withTmp(t, async (tmp) => {
      const fsname = freshParent();
      const mnt = join(tmp, 'mnt');
      execFileSync('zfs', ['set', `mountpoint=${mnt}`, fsname]);
      try {
        const d = await zfsDriver.init({ root: join(mnt, 'data'), options: {} });
        assert.equal(Object.fromEntries(await d.status())['Parent Dataset'], fsname);
        await d.create('A', null);
        assert.equal(zfsOut('list', '-H', '-o', 'name', `${fsname}/A`), `${fsname}/A`);
        await d.remove('A');
      } finally {
        execFileSync('zfs', ['umount', fsname]);
        execFileSync('zfs', ['set', 'mountpoint=none', fsname]);
      }
    }));

  test('bad input: not on zfs without zfs.fsname, a missing dataset, unknown options, size', (t) =>
    withTmp(t, async (tmp) => {
      const root = join(tmp, 'data');
      await expectError(zfsDriver.init({ root, options: {} }), 'ErrCapability', new RegExp(`^zfs: ${root} is not on zfs \\(give zfs.fsname=POOL/DATASET\\)$`));
      await expectError(zfsDriver.init({ root, options: { 'zfs.fsname': `${pool!.name}/nope` } }), 'ErrCapability', /^zfs: the dataset .*\/nope \(zfs\.fsname\) does not exist$/);
      await expectError(zfsDriver.init({ root, options: { 'zfs.bogus': '1' } }), 'ErrInvalidArgument', /^zfs: unknown option zfs\.bogus$/);
      await expectError(zfsDriver.init({ root, options: { 'zfs.fsname': 'a b' } }), 'ErrInvalidArgument', /invalid zfs\.fsname/);
      const d = await zfsDriver.init({ root, options: { 'zfs.fsname': freshParent() } });
      await expectError(d.create('A', null, { storageOpt: { size: '1G' } }), 'ErrInvalidArgument', /size is not supported/);
      await expectError(d.create('A', null, { storageOpt: { foo: '1' } }), 'ErrInvalidArgument', /^zfs: unknown storage option foo$/);
      await expectError(d.create('../x', null), 'ErrInvalidArgument', /invalid layer id/);
      assert.equal(await d.exists('A'), false);
    }));

  test('bad input: no zfs commands on the machine', (t) =>
    withTmp(t, async (tmp) => {
      const fsname = freshParent();
      const path = process.env.PATH;
      process.env.PATH = join(tmp, 'empty-bin');
      try {
        await expectError(zfsDriver.init({ root: join(tmp, 'data'), options: { 'zfs.fsname': fsname } }), 'ErrCapability', /^zfs: the zfs command is not installed/);
      } finally {
        process.env.PATH = path;
      }
    }));
});
