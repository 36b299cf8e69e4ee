import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { devicemapper } from '../../src/driver/devicemapper/devicemapper.js';
import { ensureRemoveAll } from '../../src/driver/ensure-remove.js';
import { isMountPoint, mountsUnder } from '../../src/driver/mount-table.js';
import { native } from '../../src/native/native.js';
import { isStrataError } from '../../src/errors.js';
import { isRoot, requireCap } from '../helpers/caps.js';
import { driverSuite } from './driver-suite.js';

const hasTools = existsSync('/usr/sbin/mkfs.xfs') && existsSync('/usr/sbin/mkfs.ext4') && existsSync('/dev/loop-control');
const canRun = (t: TestContext) => requireCap(t, 'root, loop devices, xfs and ext4 tools', isRoot && hasTools);

/** A small pool: 4 GiB sparse data, 256 MiB ext4 devices, so 125 layers fit in a few hundred MB of real blocks. */
const small = { 'dm.loopdatasize': '4G', 'dm.loopmetadatasize': '16M', 'dm.basesize': '256M', 'dm.fs': 'ext4' };

driverSuite('devicemapper (reflink thin pool, ext4 devices)', (root) => devicemapper.init({ root, options: small }), { mounts: true, require: canRun });

/** Loop devices whose backing file is under dir. */
function loopsUnder(dir: string): string[] {
  return execFileSync('losetup', ['-a'], { encoding: 'utf8' })
    .split('\n')
    .filter((l) => l.includes(dir));
}

async function withTmp(t: TestContext, fn: (tmp: string) => Promise<void>): Promise<void> {
  if (!canRun(t)) return;
  const tmp = await mkdtemp(join(tmpdir(), 'strata-dm-'));
  try {
    await fn(tmp);
  } finally {
    await ensureRemoveAll(tmp);
    assert.deepEqual(loopsUnder(tmp), [], 'a loop device outlived the test');
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

const usedBytes = (path: string) => {
  execFileSync('sync', ['--file-system', path]);
  const s = native.statfs(path);
  return (s.blocks - s.bfree) * s.bsize;
};

describe('devicemapper specifics', () => {
  test("a child's first write to a big file of its parent allocates only the blocks written", (t) =>
    withTmp(t, async (tmp) => {
      const d = await devicemapper.init({ root: join(tmp, 'data'), options: small });
      await d.create('image', null);
      const img = await d.get('image');
      execFileSync('dd', ['if=/dev/urandom', `of=${join(img, 'big')}`, 'bs=1M', 'count=64', 'status=none']);
      await d.put('image');
      await d.createReadWrite('ctr', 'image');
      // Holding the image mounted keeps the pool active for the measurement.
      await d.get('image');
      const pool = join(d.home, 'pool');
      const before = usedBytes(pool);
      const ctr = await d.get('ctr');
      const fh = await open(join(ctr, 'big'), 'r+');
      await fh.write(Buffer.alloc(4096, 7), 0, 4096, 32 * 1024 * 1024);
      await fh.sync();
      await fh.close();
      await d.put('ctr');
      const grown = usedBytes(pool) - before;
      await d.put('image');
      assert.ok(grown < 4 * 1024 * 1024, `a 4 KiB write into a 64 MiB file allocated ${grown} bytes`);
      const view = await d.get('ctr');
      const check = await open(join(view, 'big'), 'r');
      const { buffer } = await check.read(Buffer.alloc(4096), 0, 4096, 32 * 1024 * 1024);
      await check.close();
      assert.ok(buffer.equals(Buffer.alloc(4096, 7)));
      await d.put('ctr');
    }));

  test('metadata and status as Docker shows them; every put and remove releases its loop devices', (t) =>
    withTmp(t, async (tmp) => {
      const root = join(tmp, 'data');
      const d = await devicemapper.init({ root, options: small });
      assert.deepEqual(loopsUnder(tmp), [], 'init left the pool attached');
      await d.create('A', null);
      await d.create('B', 'A');
      const meta = await d.metadata('B');
      assert.match(meta.DeviceId!, /^\d+$/);
      assert.notEqual(meta.DeviceId, (await d.metadata('A')).DeviceId);
      assert.match(meta.DeviceName!, /^strata-\d+:\d+-\d+-B$/);
      assert.equal(meta.DeviceSize, String(256 * 1024 ** 2));
      const a = await d.get('A');
      const b = await d.get('B');
      assert.equal(b, join(root, 'devicemapper', 'mnt', 'B'));
      assert.equal(loopsUnder(tmp).length, 3, 'the pool and two devices');
      assert.deepEqual(await readdir(b), [], 'lost+found or other debris in a layer root');
      const status = Object.fromEntries(await d.status());
      assert.match(status['Pool Name']!, /^strata-\d+:\d+-\d+-pool$/);
      assert.equal(status['Base Device Size'], '268MB');
      assert.equal(status['Backing Filesystem'], 'ext4');
      assert.match(status['Data file']!, /^\/dev\/loop\d+$/);
      assert.equal(status['Data loop file'], join(root, 'devicemapper', 'devicemapper', 'data'));
      assert.equal(status['Metadata file'], join(root, 'devicemapper', 'devicemapper', 'metadata'));
      assert.match(status['Data Space Total']!, /^4\.\d+GB$/);
      assert.match(status['Data Space Used']!, /B$/);
      assert.match(status['Data Space Available']!, /GB$/);
      assert.equal(status['Metadata Space Used'], '12.3kB', 'three device records (base, A, B) of 4 KiB');
      assert.equal(status['Metadata Space Total'], '16.8MB');
      assert.match(status['Thin Pool Minimum Free Space']!, /^4\d\dMB$/);
      assert.equal(status['Udev Sync Supported'], 'false');
      assert.equal(status['Deferred Removal Enabled'], 'false');
      assert.equal(status['Library Version'], 'strata reflink-loop');
      assert.match(status.Mechanism!, /^reflink clones of loop-mounted sparse images on xfs \(kernel device-mapper absent\)/);
      await d.put('A');
      assert.equal(isMountPoint(a), false);
      assert.equal(loopsUnder(tmp).length, 2);
      await d.remove('B');
      assert.deepEqual(loopsUnder(tmp), [], 'remove of a mounted device leaked a loop device');
      assert.deepEqual(mountsUnder(tmp), []);
      await d.remove('A');
      assert.equal(Object.fromEntries(await d.status())['Metadata Space Used'], '4.1kB', 'freed records were not punched out');
      await d.create('C', null);
      await d.get('C');
      await d.cleanup();
      assert.deepEqual(loopsUnder(tmp), [], 'cleanup left loop devices');
    }));

  test('--storage-opt size above the base size grows the device and its filesystem; xfs devices', (t) =>
    withTmp(t, async (tmp) => {
      const d = await devicemapper.init({ root: join(tmp, 'data'), options: { ...small, 'dm.fs': 'xfs', 'dm.basesize': '320M' } });
      await d.create('A', null);
      await writeFile(join(await d.get('A'), 'f'), 'a');
      await d.put('A');
      await d.createReadWrite('big', 'A', { storageOpt: { size: '1G' } });
      assert.equal((await d.metadata('big')).DeviceSize, String(1024 ** 3));
      const view = await d.get('big');
      const s = native.statfs(view);
      assert.ok(s.blocks * s.bsize > 900 * 1024 ** 2, `the filesystem has ${s.blocks * s.bsize} bytes`);
      assert.equal(await readFile(join(view, 'f'), 'utf8'), 'a');
      // Two snapshots of one xfs origin mounted at once (same filesystem UUID).
      await d.create('B', 'A');
      assert.equal(await readFile(join(await d.get('B'), 'f'), 'utf8'), 'a');
      await d.put('B');
      await d.put('big');
      await expectError(d.create('small', 'A', { storageOpt: { size: '100M' } }), 'ErrInvalidArgument', /^devicemapper: container size 105MB cannot be smaller than 336MB$/);
    }));

  test('a full pool is one clear line: thin over-provisioned devices larger than the pool, dm.min_free_space', (t) =>
    withTmp(t, async (tmp) => {
      const opts = { 'dm.loopdatasize': '320M', 'dm.loopmetadatasize': '1M', 'dm.basesize': '1G', 'dm.fs': 'ext4' };
      const d = await devicemapper.init({ root: join(tmp, 'data'), options: opts });
      await d.create('A', null);
      const src = join(tmp, 'src');
      await mkdir(src);
      execFileSync('dd', ['if=/dev/urandom', `of=${join(src, 'blob')}`, 'bs=1M', 'count=400', 'status=none']);
      const tar = join(tmp, 'big.tar');
      execFileSync('tar', ['-cf', tar, '-C', src, 'blob']);
      await expectError(d.applyDiff('A', null, createReadStream(tar)), 'ErrCapability', new RegExp(`^devicemapper: thin pool ${join(tmp, 'data', 'devicemapper', 'devicemapper', 'data')} is out of data space \\(ENOSPC\\)$`));
      await expectError(d.create('B', 'A'), 'ErrCapability', /^devicemapper: thin pool .* has \d+(\.\d+)?[kM]?B free data space, less than the minimum \d+(\.\d+)?MB \(dm\.min_free_space=10%\); cannot create device B$/);
      assert.equal(await d.exists('B'), false);
      await d.remove('A');
    }));

  test('bad input: unknown options, dm.fs, a kernel thin pool, changing the base device, ids', (t) =>
    withTmp(t, async (tmp) => {
      const root = join(tmp, 'data');
      await expectError(devicemapper.init({ root, options: { 'dm.bogus': '1' } }), 'ErrInvalidArgument', /^devicemapper: unknown option dm\.bogus$/);
      await expectError(devicemapper.init({ root, options: { 'dm.fs': 'btrfs' } }), 'ErrInvalidArgument', /dm\.fs must be xfs or ext4/);
      await expectError(devicemapper.init({ root, options: { 'dm.thinpooldev': '/dev/mapper/x' } }), 'ErrInvalidArgument', /kernel device-mapper is absent/);
      await expectError(devicemapper.init({ root, options: { 'dm.loopdatasize': '100M' } }), 'ErrInvalidArgument', /at least/);
      const d = await devicemapper.init({ root, options: small });
      await expectError(devicemapper.init({ root, options: { ...small, 'dm.basesize': '512M' } }), 'ErrInvalidArgument', /^devicemapper: the base device has dm\.fs=ext4 and dm\.basesize=268MB; changing them/);
      await expectError(d.create('A', null, { storageOpt: { foo: '1' } }), 'ErrInvalidArgument', /^devicemapper: unknown storage option foo$/);
      await expectError(d.create('../x', null), 'ErrInvalidArgument', /invalid layer id/);
      // A later init without options finds the pool and its base device.
      const again = await devicemapper.init({ root, options: {} });
      assert.equal(Object.fromEntries(await again.status())['Base Device Size'], '268MB');
    }));
});
