import { describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream, createWriteStream, existsSync, lstatSync, readdirSync } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { mkdtemp, readFile, writeFile, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { isRoot, requireCap } from '../helpers/caps.js';
import { aufs, type AufsDriver } from '../../src/driver/aufs/aufs.js';
import { ensureRemoveAll } from '../../src/driver/ensure-remove.js';
import { isMountPoint, mountTable, mountsUnder } from '../../src/driver/mount-table.js';
import { native } from '../../src/native/native.js';
import { isStrataError } from '../../src/errors.js';
import { selectDriver } from '../../src/driver/driver-registry.js';
import { driverSuite } from './driver-suite.js';

const canMount = (t: TestContext) => requireCap(t, 'root, /dev/fuse and the fuse-overlayfs program', isRoot && existsSync('/usr/bin/fuse-overlayfs') && existsSync('/dev/fuse'));

driverSuite('aufs', (root) => aufs.init({ root, options: {} }), { mounts: true, require: canMount });

async function withDriver(fn: (d: AufsDriver, root: string) => Promise<void>): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'strata-aufs-'));
  let d: AufsDriver | undefined;
  try {
    d = (await aufs.init({ root, options: {} })) as AufsDriver;
    await fn(d, root);
  } finally {
    await d?.cleanup().catch(() => undefined);
    await ensureRemoveAll(root);
  }
}

/** The subset of node:fs/promises a tree walk needs: the host filesystem and the userspace union both have it. */
type WalkFs = Pick<typeof fsp, 'lstat' | 'readdir' | 'readFile' | 'readlink'>;

/** One line per visible path (type, mode, owner, content or target), for comparing two views of a layer. */
async function view(fs: WalkFs, root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (rel: string): Promise<void> => {
    for (const name of (await fs.readdir(root + rel)).sort()) {
      const p = `${rel}/${name}`;
      const st = await fs.lstat(root + p);
      const what = st.isDirectory() ? 'd' : st.isSymbolicLink() ? `l ${await fs.readlink(root + p)}` : st.isFile() ? `f ${(await fs.readFile(root + p)).toString()}` : 'other';
      out.push(`${p} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${what}`);
      if (st.isDirectory()) await walk(p);
    }
  };
  await walk('');
  return out;
}

/** Every path under a layer directory that is not AUFS form: char devices, fuse-overlayfs' private xattrs. */
function foreignForms(dir: string): string[] {
  const bad: string[] = [];
  const walk = (p: string): void => {
    for (const name of readdirSync(p)) {
      const host = `${p}/${name}`;
      const st = lstatSync(host);
      if (st.isCharacterDevice()) bad.push(`${host}: char device`);
      for (const x of native.llistxattr(host)) if (/^(trusted\.overlay|user\.overlay|user\.fuseoverlayfs)\./.test(x)) bad.push(`${host}: ${x}`);
      if (st.isDirectory()) walk(host);
    }
  };
  walk(dir);
  return bad;
}

/** A base layer A (files, a directory to delete, one to recreate) and B above it, both filled through the userspace union. */
async function twoLayersThroughUnion(d: AufsDriver): Promise<void> {
  await d.create('A', null);
  const a = await d.openFs('A');
  await a.writeFile('/keep', 'keep');
  await a.writeFile('/gone', 'gone');
  await a.mkdir('/dir/sub', { recursive: true });
  await a.writeFile('/dir/sub/old', 'old');
  await a.mkdir('/re');
  await a.writeFile('/re/old', 'old');
  await d.create('B', 'A');
  const b = await d.openFs('B');
  await b.unlink('/gone');
  await b.rm('/dir', { recursive: true });
  await b.rm('/re', { recursive: true });
  await b.mkdir('/re');
  await b.writeFile('/re/new', 'new');
  await b.writeFile('/keep', 'changed');
}

describe('aufs specifics', () => {
  test('layout: diff/, layers/ (ancestors nearest first, as Docker writes them), mnt/; status lines', () =>
    withDriver(async (d, root) => {
      assert.equal(d.home, join(root, 'aufs'));
      await d.create('A', null);
      await d.create('B', 'A');
      await d.createReadWrite('C', 'B');
      assert.deepEqual(readdirSync(d.home).sort(), ['diff', 'layers', 'mnt', 'state']);
      for (const sub of ['diff', 'layers', 'mnt']) assert.deepEqual(readdirSync(join(d.home, sub)).sort(), ['A', 'B', 'C']);
      assert.equal(await readFile(join(d.home, 'layers', 'A'), 'utf8'), '');
      assert.equal(await readFile(join(d.home, 'layers', 'B'), 'utf8'), 'A\n');
      assert.equal(await readFile(join(d.home, 'layers', 'C'), 'utf8'), 'B\nA\n');
      const status = new Map(await d.status());
      assert.equal(status.get('Root Dir'), d.home);
      assert.equal(status.get('Dirs'), '3');
      assert.deepEqual([...status.keys()], ['Root Dir', 'Backing Filesystem', 'Dirs', 'Dirperm1 Supported', 'Union']);
      assert.deepEqual(await d.metadata('C'), {});
      await d.remove('B');
      assert.deepEqual(readdirSync(join(d.home, 'layers')).sort(), ['A', 'C']);
      await assert.rejects(aufs.init({ root, options: { 'aufs.mountopt': 'x' } }), (e: unknown) => isStrataError(e, 'ErrInvalidArgument') && /unknown option aufs.mountopt/.test(e.message));
    }));

  test('openFs: the union writes AUFS whiteouts into diff/<id>; changes, diff and applyDiff read and keep them, with no mount', () =>
    withDriver(async (d, root) => {
      await twoLayersThroughUnion(d);
      const diffB = join(d.home, 'diff', 'B');
      assert.deepEqual(readdirSync(diffB).sort(), ['.wh.dir', '.wh.gone', 'keep', 're']);
      assert.deepEqual(readdirSync(join(diffB, 're')).sort(), ['.wh..wh..opq', 'new']);
      assert.deepEqual((await d.changes('B', 'A')).map((c) => `${c.kind} ${c.path}`), ['D /dir', 'D /gone', 'C /keep', 'C /re', 'A /re/new', 'D /re/old']);
      assert.equal(await d.diffSize('B', 'A'), 'changed'.length + 'new'.length);
      const tar = join(root, 'b.tar');
      await pipeline(await d.diff('B', 'A'), createWriteStream(tar));
      const names = execFileSync('tar', ['-tf', tar], { encoding: 'utf8' }).trim().split('\n');
      assert.deepEqual(names.sort(), ['.wh.dir', '.wh.gone', 'keep', 're/', 're/.wh..wh..opq', 're/new']);
      await d.create('C', 'A');
      await d.applyDiff('C', 'A', createReadStream(tar));
      // The tar's whiteouts land as the files they are, not as deletions or device nodes.
      assert.ok(lstatSync(join(d.home, 'diff', 'C', '.wh.gone')).isFile());
      assert.ok(lstatSync(join(d.home, 'diff', 'C', 're', '.wh..wh..opq')).isFile());
      assert.deepEqual(await view(await d.openFs('C'), ''), await view(await d.openFs('B'), ''));
      assert.deepEqual(await (await d.openFs('C')).readdir('/'), ['keep', 're']);
      assert.deepEqual(mountsUnder(root), []);
    }));

  test('selection: never picked by priority, but a data-root holding aufs layers keeps it without a flag', () =>
    withDriver(async (d, root) => {
      const other = await mkdtemp(join(tmpdir(), 'strata-aufs-sel-'));
      try {
        assert.notEqual((await selectDriver({ root: other, options: {} })).name, 'aufs');
      } finally {
        await ensureRemoveAll(other);
      }
      await d.create('A', null);
      assert.equal((await selectDriver({ root, options: {} })).name, 'aufs');
    }));

  test('openFs is read-write for a layer without children and read-only once it has one', () =>
    withDriver(async (d) => {
      await d.create('A', null);
      await (await d.openFs('A')).writeFile('/f', 'x');
      await d.create('B', 'A');
      await assert.rejects((await d.openFs('A')).writeFile('/g', 'y'), { code: 'EROFS' });
      assert.equal(await (await d.openFs('B')).readFile('/f', 'utf8'), 'x');
      await assert.rejects(d.openFs('missing'), (e: unknown) => isStrataError(e, 'ErrNotFound'));
    }));

  test('the fuse-overlayfs mount shows the same tree as the union; after the last put diff/<id> is pure AUFS form again', (t) => {
    if (!canMount(t)) return;
    return withDriver(async (d, root) => {
      await twoLayersThroughUnion(d);
      await d.createReadWrite('C', 'B');
      const merged = await d.get('C');
      try {
        assert.equal(mountTable().find((m) => m.mountPoint === merged)?.fstype, 'fuse.fuse-overlayfs');
        assert.deepEqual(await view(fsp, merged), await view(await d.openFs('B'), ''));
        await rm(join(merged, 'keep'));
        await rm(join(merged, 're'), { recursive: true });
        await mkdir(join(merged, 're'));
        await writeFile(join(merged, 're', 'again'), 'again');
        await mkdir(join(merged, 'fresh'));
        await writeFile(join(merged, 'fresh', 'f'), 'f');
        await writeFile(join(merged, 'keep2'), 'k');
        // While fuse-overlayfs holds the upper, changes are read through the mount and openFs is refused.
        assert.deepEqual((await d.changes('C', 'B')).map((c) => `${c.kind} ${c.path}`), ['A /fresh', 'A /fresh/f', 'D /keep', 'A /keep2', 'C /re', 'A /re/again', 'D /re/new']);
        await assert.rejects(d.openFs('C'), (e: unknown) => isStrataError(e, 'ErrConflict'));
      } finally {
        await d.put('C');
      }
      assert.equal(isMountPoint(merged), false);
      const diffC = join(d.home, 'diff', 'C');
      assert.deepEqual(foreignForms(diffC), []);
      assert.deepEqual(readdirSync(diffC).sort(), ['.wh.keep', 'fresh', 'keep2', 're']);
      assert.deepEqual(readdirSync(join(diffC, 're')).sort(), ['.wh..wh..opq', 'again']);
      // fuse-overlayfs makes every new directory opaque; where nothing is below, the marker is dropped.
      assert.deepEqual(readdirSync(join(diffC, 'fresh')), ['f']);
      assert.deepEqual((await d.changes('C', 'B')).map((c) => `${c.kind} ${c.path}`), ['A /fresh', 'A /fresh/f', 'D /keep', 'A /keep2', 'C /re', 'A /re/again', 'D /re/new']);
      const again = await d.get('C');
      let mounted: string[];
      try {
        mounted = await view(fsp, again);
      } finally {
        await d.put('C');
      }
      assert.deepEqual(await view(await d.openFs('C'), ''), mounted);
      assert.ok(mounted.includes('/re/again 644 0:0 f again'));
      assert.deepEqual(mountsUnder(root), []);
    });
  });
});
