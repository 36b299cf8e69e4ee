import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { overlay, OverlayDriver } from '../../src/driver/overlay/overlay.js';
import { ensureRemoveAll } from '../../src/driver/ensure-remove.js';
import { isMountPoint } from '../../src/driver/mount-table.js';
import { native } from '../../src/native/native.js';
import { isStrataError } from '../../src/errors.js';
import { isRoot, requireCap } from '../helpers/caps.js';
import { driverSuite } from './driver-suite.js';

const canRun = (t: TestContext) => requireCap(t, 'root (overlay mounts kernel overlayfs)', isRoot);

driverSuite('overlay', (root) => overlay.init({ root, options: {} }), { mounts: true, require: canRun });

async function withDriver(t: TestContext, fn: (d: OverlayDriver, root: string) => Promise<void>): Promise<void> {
  if (!canRun(t)) return;
  const root = await mkdtemp(join(tmpdir(), 'strata-overlay-'));
  let d: OverlayDriver | undefined;
  try {
    d = await OverlayDriver.init({ root, options: {} });
    await fn(d, root);
  } finally {
    await d?.cleanup().catch(() => undefined);
    await ensureRemoveAll(root);
  }
}

/** A layer tar made by GNU tar from a directory filled by fill. */
async function layerTar(scratch: string, name: string, fill: (dir: string) => Promise<void>): Promise<string> {
  const src = join(scratch, name);
  await mkdir(src, { recursive: true });
  await fill(src);
  const tar = join(scratch, `${name}.tar`);
  execFileSync('tar', ['--numeric-owner', '-cf', tar, '-C', src, '.']);
  return tar;
}

describe('overlay (legacy) specifics', () => {
  test("Docker's layout: root for committed layers, lower-id/upper/work/merged for read-write ones, one lower each", (t) =>
    withDriver(t, async (d) => {
      await d.create('A', null);
      await d.create('B', 'A');
      await d.createReadWrite('C', 'B');
      assert.deepEqual(await readdir(join(d.home, 'A')), ['root']);
      assert.deepEqual((await readdir(join(d.home, 'B'))).sort(), ['lower-id', 'upper', 'work']);
      assert.equal(await readFile(join(d.home, 'B', 'lower-id'), 'utf8'), 'A');
      // A child of a read-write layer copies its upper and keeps the single lower.
      assert.equal(await readFile(join(d.home, 'C', 'lower-id'), 'utf8'), 'A');
      await writeFile(join(await d.get('B'), 'b'), 'b');
      await d.put('B');
      await d.create('D', 'B');
      assert.equal(await readFile(join(d.home, 'D', 'upper', 'b'), 'utf8'), 'b');
      const merged = await d.get('D');
      try {
        assert.ok(isMountPoint(merged));
        assert.equal((await readFile('/proc/self/mountinfo', 'utf8')).split('\n').find((l) => l.includes(merged))!.match(/lowerdir=([^,]*)/)![1], join(d.home, 'A', 'root'));
      } finally {
        await d.put('D');
      }
      assert.deepEqual(await d.metadata('A'), { RootDir: join(d.home, 'A', 'root') });
      assert.deepEqual(await d.metadata('D'), {
        LowerDir: join(d.home, 'A', 'root'),
        MergedDir: join(d.home, 'D', 'merged'),
        UpperDir: join(d.home, 'D', 'upper'),
        WorkDir: join(d.home, 'D', 'work'),
      });
    }));

  test('applyDiff commits a layer as a hardlink farm of its parent; a container write copies up and leaves the shared inode alone', (t) =>
    withDriver(t, async (d, root) => {
      const scratch = join(root, 'scratch');
      await d.create('base', null);
      await d.applyDiff('base', null, createReadStream(await layerTar(scratch, 'l0', async (dir) => {
        await mkdir(join(dir, 'etc'));
        await writeFile(join(dir, 'etc', 'shared'), 'shared');
        await writeFile(join(dir, 'etc', 'gone'), 'gone');
      })));
      await d.create('top', 'base');
      await d.applyDiff('top', 'base', createReadStream(await layerTar(scratch, 'l1', async (dir) => {
        await mkdir(join(dir, 'etc'));
        await writeFile(join(dir, 'etc', 'new'), 'new');
        await writeFile(join(dir, 'etc', '.wh.gone'), '');
      })));
      assert.deepEqual((await readdir(join(d.home, 'top'))).filter((n) => n !== 'mount-count'), ['root']);
      const a = await stat(join(d.home, 'base', 'root', 'etc', 'shared'));
      const b = await stat(join(d.home, 'top', 'root', 'etc', 'shared'));
      assert.equal(b.ino, a.ino, 'the unchanged file is not shared by hardlink');
      assert.equal(b.nlink, 2);
      assert.deepEqual((await readdir(join(d.home, 'top', 'root', 'etc'))).sort(), ['new', 'shared']);
      assert.ok(existsSync(join(d.home, 'base', 'root', 'etc', 'gone')), 'the whiteout reached the parent');
      assert.deepEqual((await d.changes('top', 'base')).map((c) => `${c.kind} ${c.path}`), ['C /etc', 'D /etc/gone', 'A /etc/new']);
      await d.createReadWrite('ctr', 'top');
      const view = await d.get('ctr');
      try {
        await writeFile(join(view, 'etc', 'shared'), 'changed in the container');
      } finally {
        await d.put('ctr');
      }
      assert.equal(await readFile(join(d.home, 'base', 'root', 'etc', 'shared'), 'utf8'), 'shared');
      assert.equal(await readFile(join(d.home, 'top', 'root', 'etc', 'shared'), 'utf8'), 'shared');
      assert.deepEqual((await d.changes('ctr', 'top')).map((c) => `${c.kind} ${c.path}`), ['C /etc', 'C /etc/shared']);
    }));

  test('status: backing filesystem, d_type and inode use; unknown options are refused', async (t) => {
    await withDriver(t, async (d) => {
      const status = Object.fromEntries(await d.status());
      const s = native.statfs(d.home);
      assert.equal(status['Backing Filesystem'], 'extfs');
      assert.equal(status['Supports d_type'], 'true');
      assert.equal(status['Inodes total'], String(s.files));
      assert.ok(Math.abs(Number(status['Inodes used']) - (s.files - s.ffree)) < 1000, status['Inodes used']);
      await assert.rejects(d.create('q', null, { storageOpt: { size: '1G' } }), (e: unknown) => isStrataError(e, 'ErrInvalidArgument') && /overlay: --storage-opt size is not supported/.test(e.message));
    });
    if (!canRun(t)) return;
    const root = await mkdtemp(join(tmpdir(), 'strata-overlay-'));
    try {
      await assert.rejects(overlay.init({ root, options: { 'overlay2.size': '1G' } }), (e: unknown) => isStrataError(e, 'ErrInvalidArgument') && e.message === 'overlay: unknown option overlay2.size');
      assert.deepEqual(await readdir(root), []);
    } finally {
      await ensureRemoveAll(root);
    }
  });
});
