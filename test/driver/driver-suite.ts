import { describe, test, type TestContext } from 'node:test';
import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { createReadStream, createWriteStream } from 'node:fs';
import { appendFile, chmod, chown, link, lstat, mkdir, mkdtemp, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Driver } from '../../src/driver/driver.js';
import { isStrataError } from '../../src/errors.js';
import { ensureRemoveAll } from '../../src/driver/ensure-remove.js';
import { isMountPoint, mountsUnder } from '../../src/driver/mount-table.js';
import { treeManifest } from '../archive/tree-manifest.js';

export interface SuiteOptions {
  /** Whether get() of a layer with a parent mounts something (checked against /proc/self/mountinfo). */
  mounts: boolean;
  /** Skip (or, under STRATA_REQUIRE_CAPS=1, fail) when the machine cannot run the driver. */
  require?: (t: TestContext) => boolean;
}

/** A driver on a fresh data-root; close() releases its mounts and deletes everything. */
interface Fixture {
  d: Driver;
  root: string;
  /** A scratch directory outside the driver's home (flat reference trees, diff tars). */
  scratch: string;
}

async function withFixture(makeDriver: (root: string) => Promise<Driver>, fn: (f: Fixture) => Promise<void>): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'strata-driver-'));
  let d: Driver | undefined;
  try {
    d = await makeDriver(join(root, 'data'));
    const scratch = join(root, 'scratch');
    await mkdir(scratch);
    await fn({ d, root, scratch });
  } finally {
    await d?.cleanup().catch(() => undefined);
    await ensureRemoveAll(root);
  }
}

/** Run fn on the layer's full view, writable for a layer without children. */
async function inView<T>(d: Driver, id: string, fn: (root: string) => Promise<T>): Promise<T> {
  const root = await d.get(id);
  try {
    return await fn(root);
  } finally {
    await d.put(id);
  }
}

// What a view shows, one line per path, without times (writes to a flat copy happen at other instants).
const manifest = (root: string) => treeManifest(root, { dirMtimes: false }).map((l) => l.replace(/ mtime=\d+/, ''));

async function viewManifest(d: Driver, id: string): Promise<string[]> {
  return inView(d, id, async (root) => manifest(root));
}

async function newFlat(f: Fixture, name: string): Promise<string> {
  const dir = join(f.scratch, name);
  await mkdir(dir, { mode: 0o755 });
  await chmod(dir, 0o755);
  return dir;
}

type Ops = (root: string) => Promise<void>;

/** A chain of layers, each built by applying ops to its view and to one flat directory, compared after each step. */
async function checkChain(f: Fixture, prefix: string, steps: Ops[], compareEvery = 1): Promise<string[]> {
  const flat = await newFlat(f, prefix);
  const ids: string[] = [];
  for (const [i, ops] of steps.entries()) {
    const id = `${prefix}${i}`;
    await f.d.create(id, ids.at(-1) ?? null);
    await inView(f.d, id, ops);
    await ops(flat);
    ids.push(id);
    if ((i + 1) % compareEvery === 0 || i === steps.length - 1) {
      assert.deepEqual(await viewManifest(f.d, id), manifest(flat), `layer ${i} differs from the flat tree`);
    }
  }
  // And through a child: the chain seen as committed lowers.
  const top = `${prefix}top`;
  await f.d.create(top, ids.at(-1)!);
  assert.deepEqual(await viewManifest(f.d, top), manifest(flat), 'a child of the chain differs from the flat tree');
  return ids;
}

async function writeFileMode(path: string, data: string | Buffer, mode: number, uid = 0, gid = 0): Promise<void> {
  await writeFile(path, data);
  await chown(path, uid, gid);
  await chmod(path, mode);
}

async function mkdirMode(path: string, mode: number, uid = 0, gid = 0): Promise<void> {
  await mkdir(path);
  await chown(path, uid, gid);
  await chmod(path, mode);
}

// Docker graphtest's createBase/verifyBase.
async function createBase(d: Driver, id: string): Promise<void> {
  await d.createReadWrite(id, null);
  await inView(d, id, async (root) => {
    await mkdirMode(join(root, 'a subdir'), 0o705 | 0o1000, 1, 2);
    await writeFileMode(join(root, 'a file'), 'Some data', 0o222 | 0o4000);
  });
}

async function verifyBase(d: Driver, id: string): Promise<void> {
  await inView(d, id, async (root) => {
    const sub = await lstat(join(root, 'a subdir'));
    assert.ok(sub.isDirectory());
    assert.equal(sub.mode & 0o7777, 0o705 | 0o1000);
    assert.equal(sub.uid, 1);
    assert.equal(sub.gid, 2);
    const file = await lstat(join(root, 'a file'));
    assert.ok(file.isFile());
    assert.equal(file.mode & 0o7777, 0o222 | 0o4000);
    assert.equal(await readFile(join(root, 'a file'), 'utf8'), 'Some data');
    assert.deepEqual((await readdir(root)).sort(), ['a file', 'a subdir']);
  });
}

async function diffToFile(f: Fixture, id: string, parent: string | null, name: string): Promise<string> {
  const file = join(f.scratch, name);
  await pipeline(await f.d.diff(id, parent), createWriteStream(file));
  return file;
}

/** Entry names of a tar, as GNU tar lists them. */
async function tarNames(file: string): Promise<string[]> {
  return execFileSync('tar', ['-tf', file], { encoding: 'utf8' }).split('\n').filter((l) => l !== '').map((l) => l.replace(/^\.\//, '').replace(/\/$/, ''));
}

async function expectError(p: Promise<unknown>, code: string, pattern?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isStrataError(e), `expected a StrataError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

/**
 * The conformance suite every storage driver passes: Docker's graphtest cases plus containerd's
 * snapshotter suite cases that apply to a graphdriver (see reference/storage-engines.md §1.6, §2.2).
 */
export function driverSuite(name: string, makeDriver: (root: string) => Promise<Driver>, opts: SuiteOptions): void {
  const run = (title: string, fn: (f: Fixture, t: TestContext) => Promise<void>) =>
    test(title, async (t) => {
      if (opts.require && !opts.require(t)) return;
      await withFixture(makeDriver, (f) => fn(f, t));
    });

  describe(`driver conformance: ${name}`, () => {
    run('create empty: exists, an empty 0755 root owned by root, remove', async ({ d }) => {
      assert.equal(await d.exists('empty'), false);
      await d.create('empty', null);
      assert.equal(await d.exists('empty'), true);
      await inView(d, 'empty', async (root) => {
        const st = await stat(root);
        assert.equal(st.mode & 0o7777, 0o755);
        assert.equal(st.uid, 0);
        assert.equal(st.gid, 0);
        assert.deepEqual(await readdir(root), []);
      });
      await d.remove('empty');
      assert.equal(await d.exists('empty'), false);
      await expectError(d.get('empty'), 'ErrNotFound');
    });

    run('create base: modes, owners, setuid and sticky bits survive', async ({ d }) => {
      await createBase(d, 'base');
      await verifyBase(d, 'base');
    });

    run('snapshot: the child sees the parent, its writes stay its own', async ({ d }) => {
      await createBase(d, 'base');
      await d.create('snap', 'base');
      await verifyBase(d, 'snap');
      await d.createReadWrite('rw', 'snap');
      await inView(d, 'rw', async (root) => {
        await writeFile(join(root, 'a file'), 'changed');
        await writeFile(join(root, 'new'), 'new');
        await rm(join(root, 'a subdir'), { recursive: true });
      });
      await inView(d, 'rw', async (root) => {
        assert.equal(await readFile(join(root, 'a file'), 'utf8'), 'changed');
        assert.deepEqual((await readdir(root)).sort(), ['a file', 'new']);
      });
      await verifyBase(d, 'snap');
      await verifyBase(d, 'base');
    });

    run('duplicate id and unknown parent are refused', async ({ d }) => {
      await d.create('one', null);
      await expectError(d.create('one', null), 'ErrInvalidArgument', /already exists/);
      await expectError(d.create('two', 'missing'), 'ErrNotFound');
      assert.equal(await d.exists('two'), false);
    });

    run('125 layers: each adds, overwrites and recreates; reads match a flat tree', async (f) => {
      const steps: Ops[] = Array.from({ length: 125 }, (_, i) => async (root: string) => {
        await writeFile(join(root, `file-${i}`), `layer ${i}\n`);
        await appendFile(join(root, 'common'), `layer ${i}\n`);
        await rm(join(root, 'dir'), { recursive: true, force: true });
        await mkdir(join(root, 'dir'));
        await writeFile(join(root, 'dir', `only-${i}`), String(i));
      });
      const ids = await checkChain(f, 'deep', steps, 25);
      await inView(f.d, ids.at(-1)!, async (root) => {
        assert.equal((await readFile(join(root, 'common'), 'utf8')).split('\n').length, 126);
        assert.deepEqual(await readdir(join(root, 'dir')), ['only-124']);
      });
    });

    run('diff and applyDiff round-trip, whiteouts and opaque directories included', async (f) => {
      const { d } = f;
      await d.create('A', null);
      await inView(d, 'A', async (root) => {
        for (let i = 0; i < 10; i++) await writeFile(join(root, `base-${i}`), `base ${i}`);
        await writeFile(join(root, 'file-remove.txt'), 'gone soon');
        await mkdir(join(root, 'var/lib'), { recursive: true });
        await writeFile(join(root, 'var/lib/db'), 'db');
        await mkdir(join(root, 'opq'));
        await writeFile(join(root, 'opq/old'), 'old');
        await writeFileMode(join(root, 'mod'), 'v1', 0o644);
      });
      await d.create('B', 'A');
      await inView(d, 'B', async (root) => {
        for (let i = 0; i < 10; i++) await writeFile(join(root, `upper-${i}`), `upper ${i}`);
        await rm(join(root, 'file-remove.txt'));
        await rm(join(root, 'var/lib'), { recursive: true });
        await rm(join(root, 'opq'), { recursive: true });
        await mkdir(join(root, 'opq'));
        await writeFile(join(root, 'opq/new'), 'new');
        await writeFileMode(join(root, 'mod'), 'version 2', 0o600, 5, 6);
        await symlink('base-1', join(root, 'link'));
        await link(join(root, 'upper-1'), join(root, 'hard'));
      });
      const tar = await diffToFile(f, 'B', 'A', 'b.tar');
      const names = await tarNames(tar);
      assert.ok(names.includes('.wh.file-remove.txt'), `no whiteout for file-remove.txt in ${names.join(' ')}`);
      assert.ok(names.includes('var/.wh.lib'), `no whiteout for var/lib in ${names.join(' ')}`);
      assert.ok(!names.some((n) => n.startsWith('base-')), 'unchanged parent files leaked into the diff');
      await d.create('C', 'A');
      const applied = await d.applyDiff('C', 'A', createReadStream(tar));
      assert.deepEqual(await viewManifest(d, 'C'), await viewManifest(d, 'B'));
      await inView(d, 'C', async (root) => {
        assert.deepEqual(await readdir(join(root, 'opq')), ['new']);
        assert.deepEqual(await readdir(join(root, 'var')), []);
      });
      assert.ok(applied >= 10 * 'upper 0'.length, `applyDiff reported ${applied} bytes`);
      if (d.setParent) {
        // Filled before its parent was chained (the layers of a pull apply concurrently), then chained: the same view.
        await d.create('D', null);
        await d.applyDiff('D', null, createReadStream(tar));
        await d.setParent('D', 'A');
        assert.deepEqual(await viewManifest(d, 'D'), await viewManifest(d, 'B'));
        await expectError(d.setParent('D', 'A'), 'ErrConflict');
      }
    });

    run('applyDiff size equals diffSize for added files', async (f) => {
      const { d } = f;
      await d.create('A', null);
      await inView(d, 'A', (root) => writeFile(join(root, 'a'), 'a'));
      await d.create('B', 'A');
      await inView(d, 'B', async (root) => {
        await writeFile(join(root, 'x'), Buffer.alloc(1000, 1));
        await mkdir(join(root, 'sub'));
        await writeFile(join(root, 'sub/y'), Buffer.alloc(2345, 2));
      });
      const tar = await diffToFile(f, 'B', 'A', 'b.tar');
      await d.create('C', 'A');
      const applied = await d.applyDiff('C', 'A', createReadStream(tar));
      assert.equal(applied, 3345);
      assert.equal(await d.diffSize('C', 'A'), 3345);
      assert.equal(await d.diffSize('B', 'A'), 3345);
    });

    run('changes: added, changed and deleted paths, as docker diff shows them', async ({ d }) => {
      await d.create('A', null);
      await inView(d, 'A', async (root) => {
        await mkdir(join(root, 'etc'));
        await writeFile(join(root, 'etc/mod'), 'v1');
        await writeFile(join(root, 'etc/keep'), 'keep');
        await writeFile(join(root, 'del'), 'del');
        await mkdir(join(root, 'deldir/sub'), { recursive: true });
        await writeFile(join(root, 'deldir/sub/f'), 'f');
      });
      await d.createReadWrite('B', 'A');
      await inView(d, 'B', async (root) => {
        await writeFile(join(root, 'etc/mod'), 'version 2');
        await writeFile(join(root, 'new'), 'new');
        await mkdir(join(root, 'newdir'));
        await writeFile(join(root, 'newdir/f'), 'f');
        await rm(join(root, 'del'));
        await rm(join(root, 'deldir'), { recursive: true });
      });
      const changes = await d.changes('B', 'A');
      assert.deepEqual(
        changes.map((c) => `${c.kind} ${c.path}`),
        ['D /del', 'D /deldir', 'C /etc', 'C /etc/mod', 'A /new', 'A /newdir', 'A /newdir/f'],
      );
      const base = await d.changes('A', null);
      assert.ok(base.every((c) => c.kind === 'A'));
      assert.ok(base.some((c) => c.path === '/deldir/sub/f'));
    });

    run('diffSize: added and modified content, a hardlinked inode once, deletions free', async ({ d }) => {
      await d.create('A', null);
      await inView(d, 'A', async (root) => {
        await writeFile(join(root, 'mod'), Buffer.alloc(100));
        await writeFile(join(root, 'del'), Buffer.alloc(7000));
      });
      await d.create('B', 'A');
      await inView(d, 'B', async (root) => {
        await writeFile(join(root, 'one'), Buffer.alloc(1000));
        await writeFile(join(root, 'two'), Buffer.alloc(2000));
        await link(join(root, 'one'), join(root, 'one-again'));
        await writeFile(join(root, 'mod'), Buffer.alloc(500));
        await rm(join(root, 'del'));
      });
      assert.equal(await d.diffSize('B', 'A'), 3500);
      assert.equal(await d.diffSize('A', null), 7100);
    });

    run('a file updated in several layers: content and mode of the top one win', async (f) => {
      const write = (content: string, mode: number): Ops => async (root) => {
        await mkdir(join(root, 'etc'), { recursive: true });
        await writeFileMode(join(root, 'etc/hosts'), content, mode);
      };
      await checkChain(f, 'upd', [write('mydomain 10.0.0.1', 0o644), write('mydomain 10.0.0.2', 0o666), write('mydomain 10.0.0.120', 0o600)]);
    });

    run('a directory removed and recreated in an upper layer hides the lower content', async (f) => {
      const ids = await checkChain(f, 'lib', [
        async (root) => {
          await mkdir(join(root, 'lib/modules'), { recursive: true });
          await writeFile(join(root, 'lib/a'), 'a');
          await writeFile(join(root, 'lib/modules/m'), 'm');
        },
        async (root) => {
          await rm(join(root, 'lib'), { recursive: true });
          await mkdir(join(root, 'lib'));
          await writeFile(join(root, 'lib/newfile'), 'new');
        },
        async (root) => writeFile(join(root, 'other'), 'x'),
      ]);
      // The diff of the middle layer carries the deletion, however the driver encodes it.
      const tar = await diffToFile(f, ids[1]!, ids[0]!, 'lib.tar');
      await f.d.create('re', ids[0]!);
      await f.d.applyDiff('re', ids[0]!, createReadStream(tar));
      await inView(f.d, 're', async (root) => assert.deepEqual(await readdir(join(root, 'lib')), ['newfile']));
    });

    run('chown in an upper layer is preserved', async (f) => {
      await checkChain(f, 'own', [
        async (root) => {
          await mkdir(join(root, 'dir1/dir2'), { recursive: true });
          await writeFile(join(root, 'dir1/dir2/file'), 'f');
          await writeFile(join(root, 'top'), 't');
        },
        async (root) => {
          await chown(join(root, 'dir1'), 1000, 1000);
          await chown(join(root, 'dir1/dir2'), 1001, 1002);
          await chown(join(root, 'dir1/dir2/file'), 1003, 1004);
          await chown(join(root, 'top'), 7, 8);
        },
      ]);
    });

    run('directory permissions and owners preserved on commit', async (f) => {
      await checkChain(f, 'perm', [
        async (root) => {
          await mkdirMode(join(root, 'dir1'), 0o700, 1, 1);
          await mkdirMode(join(root, 'dir2'), 0o700, 2, 2);
          await mkdirMode(join(root, 'dir3'), 0o700, 3, 3);
          await writeFileMode(join(root, 'dir1/f'), 'a', 0o700, 1, 1);
          await writeFileMode(join(root, 'dir2/f'), 'a', 0o700, 2, 2);
        },
        async (root) => {
          await rm(join(root, 'dir1'), { recursive: true });
          await mkdirMode(join(root, 'dir1'), 0o750, 4, 4);
          await writeFileMode(join(root, 'dir1/f2'), 'b', 0o640, 4, 4);
          await writeFileMode(join(root, 'dir3/f'), 'c', 0o600, 3, 3);
          await chmod(join(root, 'dir2'), 0o711);
        },
        async (root) => {
          await mkdirMode(join(root, 'dir1/sub'), 0o700, 5, 5);
          await writeFileMode(join(root, 'dir2/f'), 'changed', 0o644, 2, 2);
        },
      ]);
    });

    run('files deleted in a layer stay deleted in its children', async (f) => {
      const ids = await checkChain(f, 'del', [
        async (root) => {
          await writeFile(join(root, 'foo'), 'foo');
          await writeFile(join(root, 'bar'), 'bar');
        },
        async (root) => rm(join(root, 'foo')),
        async (root) => writeFile(join(root, 'baz'), 'baz'),
      ]);
      await inView(f.d, ids[2]!, async (root) => assert.deepEqual((await readdir(root)).sort(), ['bar', 'baz']));
    });

    run('files moved and hardlinked out of a lower layer', async (f) => {
      await checkChain(f, 'mv', [
        async (root) => {
          await mkdir(join(root, 'dir1'));
          await writeFile(join(root, 'dir1/f1'), 'f1');
          await writeFile(join(root, 'dir1/f2'), 'f2');
          await mkdir(join(root, 'gone'));
          await writeFile(join(root, 'gone/x'), 'x');
        },
        async (root) => {
          await rm(join(root, 'gone'), { recursive: true });
          await mkdir(join(root, 'dir2'));
          await link(join(root, 'dir1/f1'), join(root, 'dir2/f1'));
          await rm(join(root, 'dir1/f1'));
          await rename(join(root, 'dir1/f2'), join(root, 'f2-moved'));
        },
      ]);
    });

    run('remove: a layer in use is unmounted and deleted; removing twice is fine', async ({ d, root }) => {
      await d.create('A', null);
      await d.createReadWrite('B', 'A');
      const view = await d.get('B');
      await writeFile(join(view, 'f'), 'f');
      await d.remove('B');
      assert.equal(await d.exists('B'), false);
      assert.equal(isMountPoint(view), false);
      await d.remove('B');
      await expectError(d.get('B'), 'ErrNotFound');
      // Nothing of B is left mounted anywhere under the data-root.
      assert.deepEqual(mountsUnder(root), [], 'a mount under the data-root survived remove');
    });

    run('get/put are reference counted: the last put releases the view', async ({ d }) => {
      await d.create('A', null);
      await inView(d, 'A', (root) => writeFile(join(root, 'f'), 'from A'));
      await d.createReadWrite('B', 'A');
      const first = await d.get('B');
      const second = await d.get('B');
      assert.equal(second, first);
      if (opts.mounts) assert.ok(isMountPoint(first), 'get did not mount');
      await d.put('B');
      assert.equal(await readFile(join(first, 'f'), 'utf8'), 'from A');
      if (opts.mounts) assert.ok(isMountPoint(first), 'one put of two unmounted');
      await d.put('B');
      if (opts.mounts) assert.equal(isMountPoint(first), false, 'the last put left the mount');
      await expectError(d.put('missing'), 'ErrNotFound');
    });

    run('a per-layer size limit is refused without quota support', async ({ d }) => {
      await expectError(d.createReadWrite('q', null, { storageOpt: { size: '50M' } }), 'ErrInvalidArgument');
      assert.equal(await d.exists('q'), false);
      await expectError(d.create('q', null, { storageOpt: { size: '50M' } }), 'ErrInvalidArgument');
    });

    run('status and metadata describe the driver and the layer', async ({ d }) => {
      await d.create('A', null);
      assert.ok(Array.isArray(await d.status()));
      assert.equal(typeof (await d.metadata('A')), 'object');
      await expectError(d.metadata('missing'), 'ErrNotFound');
    });

    run("openFs, where a driver has it: the layer's full view with no mount, writable only for a read-write layer", async ({ d }) => {
      if (!d.openFs) return; // optional: without it, callers mount with get()
      await createBase(d, 'base');
      await d.create('snap', 'base');
      await d.createReadWrite('rw', 'snap');
      const mounts = mountsUnder(d.home);
      const ro = await d.openFs('snap');
      await assert.rejects(ro.writeFile('/x', 'x'), { code: 'EROFS' });
      const rw = await d.openFs('rw');
      await rw.writeFile('/new', 'new');
      assert.equal(await rw.readFile('/a file', 'utf8'), await inView(d, 'base', (root) => readFile(join(root, 'a file'), 'utf8')));
      assert.deepEqual(mountsUnder(d.home), mounts, 'openFs mounted something');
      await inView(d, 'rw', async (root) => {
        assert.equal(await readFile(join(root, 'new'), 'utf8'), 'new');
        assert.deepEqual((await rw.readdir('/')).sort(), (await readdir(root)).sort());
      });
      await verifyBase(d, 'snap');
      await expectError(d.openFs('missing'), 'ErrNotFound');
    });
  });
}
