import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Driver } from '../../src/driver/driver.js';
import { fuseOverlayfs } from '../../src/driver/fuse-overlayfs/fuse-overlayfs.js';
import { ensureRemoveAll } from '../../src/driver/ensure-remove.js';
import { mountTable } from '../../src/driver/mount-table.js';
import { native } from '../../src/native/native.js';
import { isStrataError } from '../../src/errors.js';
import { isRoot, requireCap } from '../helpers/caps.js';
import { driverSuite } from './driver-suite.js';

const hasProgram = existsSync('/usr/bin/fuse-overlayfs') && existsSync('/dev/fuse');
const canRun = (t: TestContext) => requireCap(t, 'root, /dev/fuse and the fuse-overlayfs program', isRoot && hasProgram);

driverSuite('fuse-overlayfs', (root) => fuseOverlayfs.init({ root, options: {} }), { mounts: true, require: canRun });

async function withDriver(t: TestContext, fn: (d: Driver, root: string) => Promise<void>): Promise<void> {
  if (!canRun(t)) return;
  const root = await mkdtemp(join(tmpdir(), 'strata-fuse-overlayfs-'));
  let d: Driver | undefined;
  try {
    d = await fuseOverlayfs.init({ root, options: {} });
    await fn(d, root);
  } finally {
    await d?.cleanup().catch(() => undefined);
    await ensureRemoveAll(root);
  }
}

describe('fuse-overlayfs specifics', () => {
  test("views are fuse-overlayfs mounts over overlay2's on-disk layout", (t) =>
    withDriver(t, async (d, root) => {
      assert.equal(d.home, join(root, 'fuse-overlayfs'));
      await d.create('A', null);
      await d.get('A').then((p) => writeFile(join(p, 'f'), 'from A'));
      await d.put('A');
      await d.createReadWrite('B', 'A');
      const merged = await d.get('B');
      try {
        assert.equal(merged, join(d.home, 'B', 'merged'));
        const entry = mountTable().find((m) => m.mountPoint === merged);
        assert.equal(entry?.fstype, 'fuse.fuse-overlayfs');
        assert.equal(await readFile(join(merged, 'f'), 'utf8'), 'from A');
        await writeFile(join(merged, 'f'), 'from B');
      } finally {
        await d.put('B');
      }
      assert.equal(await readFile(join(d.home, 'B', 'diff', 'f'), 'utf8'), 'from B');
      assert.deepEqual((await readdir(join(d.home, 'B'))).filter((n) => n !== 'mount-count').sort(), ['diff', 'link', 'lower', 'work']);
      assert.match(await readFile(join(d.home, 'B', 'lower'), 'utf8'), /^l\/[A-Z2-7]{26}$/);
      const md = await d.metadata('B');
      assert.deepEqual(Object.keys(md).sort(), ['LowerDir', 'MergedDir', 'UpperDir', 'WorkDir']);
      assert.equal(md.LowerDir, join(d.home, 'A', 'diff'));
    }));

  test('reads the overlay2 whiteout format: a char 0/0 whiteout and the opaque xattr written by applyDiff', (t) =>
    withDriver(t, async (d) => {
      await d.create('A', null);
      const a = await d.get('A');
      await writeFile(join(a, 'gone'), 'x');
      await import('node:fs/promises').then((fs) => fs.mkdir(join(a, 'opq')));
      await writeFile(join(a, 'opq', 'old'), 'x');
      await d.put('A');
      await d.create('B', 'A');
      // Written as overlay2 would leave them, without going through the mount.
      native.mknod(join(d.home, 'B', 'diff', 'gone'), 0o020000, 0, 0);
      await import('node:fs/promises').then((fs) => fs.mkdir(join(d.home, 'B', 'diff', 'opq')));
      native.lsetxattr(join(d.home, 'B', 'diff', 'opq'), 'trusted.overlay.opaque', Buffer.from('y'));
      const b = await d.get('B');
      try {
        assert.deepEqual((await readdir(b)).sort(), ['opq']);
        assert.deepEqual(await readdir(join(b, 'opq')), []);
      } finally {
        await d.put('B');
      }
      assert.deepEqual((await d.changes('B', 'A')).map((c) => `${c.kind} ${c.path}`), ['D /gone', 'C /opq', 'D /opq/old']);
    }));

  test('status names the backing filesystem; unknown options are refused', async (t) => {
    await withDriver(t, async (d) => {
      assert.deepEqual(await d.status(), [['Backing Filesystem', 'extfs']]);
    });
    if (!canRun(t)) return;
    const root = await mkdtemp(join(tmpdir(), 'strata-fuse-overlayfs-'));
    try {
      await assert.rejects(fuseOverlayfs.init({ root, options: { 'overlay2.size': '1G' } }), (e: unknown) => isStrataError(e, 'ErrInvalidArgument') && /^fuse-overlayfs: unknown option overlay2.size$/.test(e.message));
      assert.deepEqual(await readdir(root), []);
    } finally {
      await ensureRemoveAll(root);
    }
  });
});
