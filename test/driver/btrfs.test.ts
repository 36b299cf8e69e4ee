import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import type { Driver } from '../../src/driver/driver.js';
import { btrfsDriver } from '../../src/driver/btrfs/btrfs.js';
import { ensureRemoveAll } from '../../src/driver/ensure-remove.js';
import { isMountPoint } from '../../src/driver/mount-table.js';
import { native } from '../../src/native/native.js';
import { isStrataError } from '../../src/errors.js';
import { isRoot, requireCap } from '../helpers/caps.js';
import { driverSuite } from './driver-suite.js';

const hasTools = existsSync('/usr/bin/btrfs') && existsSync('/usr/sbin/mkfs.btrfs') && readFileSyncSafe('/proc/filesystems').includes('btrfs');
function readFileSyncSafe(p: string): string {
  try {
    return execFileSync('cat', [p], { encoding: 'utf8' });
  } catch {
    return '';
  }
}
const canRun = (t: TestContext) => requireCap(t, 'root, kernel btrfs and btrfs-progs', isRoot && hasTools);

/*
 * The suite runs on data-roots inside a btrfs filesystem this file loop-mounts (TMPDIR points there
 * while it runs). Not through btrfs.pool: the pool is mounted inside the data-root and stays mounted
 * by design, which the suite's remove case counts as a layer mount left behind. The pool itself is
 * covered by the cases below.
 */
/** The temp dir on the host filesystem (not btrfs here), taken before the suite redirects TMPDIR. */
const hostTmp = tmpdir();
const suiteFs = { file: '', mnt: '', tmpdir: process.env.TMPDIR };
before(async () => {
  if (!(isRoot && hasTools)) return;
  const dir = await mkdtemp(join(tmpdir(), 'strata-btrfs-suite-'));
  suiteFs.file = join(dir, 'fs.img');
  suiteFs.mnt = join(dir, 'mnt');
  await mkdir(suiteFs.mnt);
  execFileSync('truncate', ['-s', '2G', suiteFs.file]);
  execFileSync('mkfs.btrfs', ['-q', suiteFs.file], { stdio: 'ignore' });
  execFileSync('mount', ['-o', 'loop', suiteFs.file, suiteFs.mnt]);
  process.env.TMPDIR = suiteFs.mnt;
});
after(async () => {
  if (suiteFs.tmpdir === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = suiteFs.tmpdir;
  if (suiteFs.file !== '') await ensureRemoveAll(dirname(suiteFs.file));
});

driverSuite('btrfs (data-root on btrfs)', (root) => btrfsDriver.init({ root, options: {} }), { mounts: false, require: canRun });

async function withTmp(t: TestContext, fn: (tmp: string) => Promise<void>): Promise<void> {
  if (!canRun(t)) return;
  const tmp = await mkdtemp(join(hostTmp, 'strata-btrfs-'));
  try {
    await fn(tmp);
  } finally {
    await ensureRemoveAll(tmp);
  }
}

const poolOpts = (tmp: string, extra: Record<string, string> = {}) => ({ 'btrfs.pool': join(tmp, 'pool.img'), 'btrfs.pool_size': '1G', ...extra });

async function expectError(p: Promise<unknown>, code: string, pattern: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isStrataError(e), String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, pattern);
    return true;
  });
}

const used = (path: string) => {
  const s = native.statfs(path);
  return (s.blocks - s.bfree) * s.bsize;
};

describe('btrfs specifics', () => {
  test("Docker's layout: subvolumes/<id> subvolumes, children are snapshots; the pool mount outlives the driver and is found again", (t) =>
    withTmp(t, async (tmp) => {
      const root = join(tmp, 'data');
      const d = await btrfsDriver.init({ root, options: poolOpts(tmp) });
      assert.ok(isMountPoint(join(root, 'btrfs')));
      await d.create('A', null);
      await d.create('B', 'A');
      assert.deepEqual((await readdir(join(root, 'btrfs', 'subvolumes'))).sort(), ['A', 'B']);
      const list = execFileSync('btrfs', ['subvolume', 'list', '-s', join(root, 'btrfs')], { encoding: 'utf8' });
      assert.match(list, /path subvolumes\/B$/m, 'B is not a snapshot');
      assert.deepEqual(await d.metadata('B'), { Subvolume: join(root, 'btrfs', 'subvolumes', 'B') });
      await d.cleanup();
      assert.ok(isMountPoint(join(root, 'btrfs')), 'cleanup unmounted the pool under other processes');
      // Without the option: the mount (or, after a reboot, the record) finds the pool again.
      const again = await btrfsDriver.init({ root, options: {} });
      assert.equal(Object.fromEntries(await again.status()).Pool, join(tmp, 'pool.img'));
      execFileSync('umount', [join(root, 'btrfs')]);
      const remounted = await btrfsDriver.init({ root, options: {} });
      assert.ok(isMountPoint(join(root, 'btrfs')));
      assert.equal(await remounted.exists('B'), true);
      // A nested subvolume made inside a layer (as systemd in a container would) does not block removal.
      const b = await remounted.get('B');
      execFileSync('btrfs', ['subvolume', 'create', join(b, 'nested')]);
      await remounted.remove('B');
      assert.equal(await remounted.exists('B'), false);
      await expectError(btrfsDriver.init({ root, options: { 'btrfs.pool': join(tmp, 'other.img') } }), 'ErrConflict', /already mounted from .*pool\.img, not from the pool .*other\.img/);
    }));

  test('a snapshot is O(1): a child of a 10,000-file layer is fast and takes no space', (t) =>
    withTmp(t, async (tmp) => {
      const d = await btrfsDriver.init({ root: join(tmp, 'data'), options: poolOpts(tmp) });
      await d.create('big', null);
      const view = await d.get('big');
      for (let i = 0; i < 100; i++) {
        await mkdir(join(view, `d${i}`));
        await Promise.all(Array.from({ length: 100 }, (_, j) => writeFile(join(view, `d${i}`, `f${j}`), Buffer.alloc(4096, i + j))));
      }
      execFileSync('btrfs', ['filesystem', 'sync', view]);
      const before = used(d.home);
      const start = performance.now();
      await d.create('child', 'big');
      const ms = performance.now() - start;
      execFileSync('btrfs', ['filesystem', 'sync', view]);
      const grown = used(d.home) - before;
      assert.ok(ms < 2000, `snapshot of 10,000 files took ${ms.toFixed(0)} ms`);
      assert.ok(grown < 1024 * 1024, `snapshot took ${grown} bytes (the parent holds 40 MB)`);
      const du = execFileSync('btrfs', ['filesystem', 'du', '-s', '--raw', join(d.home, 'subvolumes', 'child')], { encoding: 'utf8' });
      const [total, exclusive] = du.trim().split('\n').at(-1)!.trim().split(/\s+/).map(Number);
      assert.ok(total! >= 10_000 * 4096, `du total ${total}`);
      assert.equal(exclusive, 0, 'the snapshot has extents of its own');
      assert.equal((await readdir(join(d.home, 'subvolumes', 'child', 'd99'))).length, 100);
    }));

  test('compression: the subvolumes carry the property, and status shows it with the pool', (t) =>
    withTmp(t, async (tmp) => {
      const d = await btrfsDriver.init({ root: join(tmp, 'data'), options: poolOpts(tmp, { 'btrfs.compress': 'zstd' }) });
      await d.create('A', null);
      await d.create('B', 'A');
      for (const id of ['A', 'B']) {
        assert.match(execFileSync('btrfs', ['property', 'get', join(d.home, 'subvolumes', id), 'compression'], { encoding: 'utf8' }), /compression=zstd/);
      }
      const status = Object.fromEntries(await d.status());
      assert.equal(status.Compression, 'zstd');
      assert.equal(status.Pool, join(tmp, 'pool.img'));
      assert.match(status['Pool Size']!, /^1\.0\d* ?GB$|^1\.07 ?GB$/);
      assert.match(status['Pool Used']!, /B$/);
      assert.match(status['Pool Device']!, /^\/dev\/loop\d+$/);
      assert.match(status['Build Version']!, /^Btrfs v\d/);
      assert.match(status['Library Version']!, /^\d+\.\d+/);
    }));

  test('btrfs.min_space refuses new layers when the pool has less free space', (t) =>
    withTmp(t, async (tmp) => {
      const d = await btrfsDriver.init({ root: join(tmp, 'data'), options: poolOpts(tmp, { 'btrfs.min_space': '100T' }) });
      await expectError(d.create('A', null), 'ErrCapability', /^btrfs: not enough free space to create layer A: .* left, btrfs\.min_space is 110 ?TB$/);
      assert.equal(await d.exists('A'), false);
    }));

  test('a full pool is one clear line naming the driver and the pool', (t) =>
    withTmp(t, async (tmp) => {
      const d = await btrfsDriver.init({ root: join(tmp, 'data'), options: poolOpts(tmp, { 'btrfs.pool_size': '128M' }) });
      await d.create('A', null);
      const big = join(tmp, 'big.tar');
      const src = join(tmp, 'src');
      await mkdir(src);
      execFileSync('dd', ['if=/dev/urandom', `of=${join(src, 'blob')}`, 'bs=1M', 'count=200', 'status=none']);
      execFileSync('tar', ['-cf', big, '-C', src, 'blob']);
      await expectError(d.applyDiff('A', null, createReadStream(big)), 'ErrCapability', new RegExp(`^btrfs: the pool ${join(tmp, 'pool.img')} is full \\(no space left on device\\)$`));
    }));

  test('bad input: not btrfs without a pool, unknown options, a pool file on a full disk', (t) =>
    withTmp(t, async (tmp) => {
      const root = join(tmp, 'data');
      await expectError(btrfsDriver.init({ root, options: {} }), 'ErrCapability', new RegExp(`^btrfs: ${root} is not on btrfs \\(give btrfs.pool=FILE to use a loop-mounted pool\\)$`));
      assert.deepEqual(await readdir(root), [], 'a refused init left state behind');
      await expectError(btrfsDriver.init({ root, options: { 'btrfs.bogus': '1' } }), 'ErrInvalidArgument', /^btrfs: unknown option btrfs\.bogus$/);
      await expectError(btrfsDriver.init({ root, options: { 'btrfs.compress': 'lz4' } }), 'ErrInvalidArgument', /btrfs\.compress must be one of zstd, lzo, zlib, none/);
      await expectError(btrfsDriver.init({ root, options: { 'btrfs.pool': 'relative.img' } }), 'ErrInvalidArgument', /absolute path/);
      const full = join(tmp, 'full');
      await mkdir(full);
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', full]);
      await expectError(btrfsDriver.init({ root, options: { 'btrfs.pool': join(full, 'pool.img'), 'btrfs.pool_size': '1G' } }), 'ErrCapability', /^btrfs: cannot create pool .*full\/pool\.img: no space left on device \(\d+ bytes free\)$/);
      assert.deepEqual(await readdir(full), [], 'the half-made pool file was left behind');
      const d = await btrfsDriver.init({ root, options: poolOpts(tmp) });
      await expectError(d.create('A', null, { storageOpt: { size: '1G' } }), 'ErrInvalidArgument', /size is not supported/);
      await expectError(d.create('A', null, { storageOpt: { foo: '1' } }), 'ErrInvalidArgument', /^btrfs: unknown storage option foo$/);
    }));

  test('a data-root on btrfs itself needs no pool', (t) =>
    withTmp(t, async (tmp) => {
      const fsfile = join(tmp, 'fs.img');
      const mnt = join(tmp, 'mnt');
      await mkdir(mnt);
      execFileSync('truncate', ['-s', '1G', fsfile]);
      execFileSync('mkfs.btrfs', ['-q', fsfile]);
      execFileSync('mount', ['-o', 'loop', fsfile, mnt]);
      const d = await btrfsDriver.init({ root: join(mnt, 'data'), options: {} });
      await d.create('A', null);
      await writeFile(join(await d.get('A'), 'f'), 'a');
      await d.create('B', 'A');
      assert.equal(await readFile(join(await d.get('B'), 'f'), 'utf8'), 'a');
      const status = Object.fromEntries(await d.status());
      assert.equal(status.Pool, undefined);
      assert.equal(isMountPoint(d.home), false);
    }));
});
