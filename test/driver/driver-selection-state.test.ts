import { after, before, describe, test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Engine } from '../../src/engine.js';
import { ensureRemoveAll } from '../../src/driver/ensure-remove.js';
import { isStrataError } from '../../src/errors.js';
import { busyboxImage, dockerArchive } from '../fixtures/images.js';
import { run } from '../fixtures/run.js';
import { unmountUnder } from '../fixtures/unmount.js';
import { createZfsPool, hasZfsTools, type ZfsPool } from '../fixtures/zfs-pool.js';
import { isRoot, requireCap } from '../helpers/caps.js';
import { ALL_ENGINE_DRIVERS } from '../helpers/engine-drivers.js';

const BIN = resolve(import.meta.dirname, '../../bin/strata');

let work = '';
let rootfsTar = '';
before(async () => {
  work = await mkdtemp(join(tmpdir(), 'strata-select-state-'));
  await mkdir(join(work, 'rootfs', 'etc'), { recursive: true });
  await writeFile(join(work, 'rootfs', 'etc', 'motd'), 'hi\n');
  rootfsTar = join(work, 'rootfs.tar');
  execFileSync('tar', ['-C', join(work, 'rootfs'), '-cf', rootfsTar, '.']);
});
after(async () => {
  unmountUnder(work);
  await ensureRemoveAll(work);
});

/** A data-root where each named driver holds an imported image (real state, as a previous run leaves it). */
async function rootWithState(name: string, drivers: string[]): Promise<string> {
  const root = join(work, name);
  for (const d of drivers) {
    const e = await Engine.open({ dataRoot: root, storageDriver: d });
    try {
      await e.import(createReadStream(rootfsTar), { reference: `from-${d}:1` });
    } finally {
      await e.close();
    }
  }
  return root;
}

const strata = (root: string, args: string[]) => run(BIN, ['--data-root', root, ...args]);

describe('switching drivers on a data-root with state, as dockerd does', () => {
  test('state for two drivers and no choice: a one-line refusal naming both; an explicit choice opens', async (t: TestContext) => {
    if (!requireCap(t, 'root (overlay and overlay2)', isRoot)) return;
    const root = await rootWithState('two', ['overlay2', 'overlay']);
    await assert.rejects(Engine.open({ dataRoot: root }), (e: unknown) => {
      assert.ok(isStrataError(e, 'ErrConflict'), String(e));
      assert.match(e.message, /contains several valid storage drivers: overlay2, overlay; .*--storage-driver/);
      return true;
    });
    const cli = await strata(root, ['images']);
    assert.notEqual(cli.code, 0);
    assert.equal(cli.stdout, '');
    assert.match(cli.stderr, /^Error: .* contains several valid storage drivers: overlay2, overlay; [^\n]*\n$/);
    const chosen = await strata(root, ['-s', 'overlay', 'images']);
    assert.equal(chosen.code, 0, chosen.stderr);
    assert.match(chosen.stdout, /^from-overlay\s+1\s/m);
    assert.doesNotMatch(chosen.stdout, /from-overlay2/);
  });

  test('state for one driver: it is chosen without a flag, even over the priority list; -s other initialises the other', async (t: TestContext) => {
    if (!requireCap(t, 'root (overlay and overlay2)', isRoot)) return;
    // overlay is not in the priority list: only its state can make it the choice.
    const root = await rootWithState('one', ['overlay']);
    const e = await Engine.open({ dataRoot: root });
    try {
      assert.equal(e.driverName, 'overlay');
      assert.deepEqual((await e.images()).flatMap((i) => i.RepoTags), ['from-overlay:1']);
    } finally {
      await e.close();
    }
    const info = await strata(root, ['info']);
    assert.equal(info.code, 0, info.stderr);
    assert.match(info.stdout, /^ Storage Driver: overlay$/m);
    // Docker allows an explicit switch: the other driver starts empty beside the old state.
    const other = await strata(root, ['-s', 'overlay2', 'images', '-q']);
    assert.equal(other.code, 0, other.stderr);
    assert.equal(other.stdout, '');
    const imported = await strata(root, ['-s', 'overlay2', 'import', rootfsTar, 'from-overlay2:1']);
    assert.equal(imported.code, 0, imported.stderr);
    assert.ok(existsSync(join(root, 'overlay2')));
    // Now both have state: no flag is refused again.
    const refused = await strata(root, ['info']);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /^Error: [^\n]*several valid storage drivers: overlay2, overlay;[^\n]*\n$/);
  });
});

/** What `info` and `inspect` show for each driver, on busybox. */
const SHOWN: Record<string, { status: string[]; graph: string[] }> = {
  overlay2: { status: ['Backing Filesystem', 'Supports d_type'], graph: ['LowerDir', 'MergedDir', 'UpperDir', 'WorkDir'] },
  'fuse-overlayfs': { status: ['Backing Filesystem'], graph: ['LowerDir', 'MergedDir', 'UpperDir', 'WorkDir'] },
  overlay: { status: ['Backing Filesystem', 'Supports d_type', 'Inodes used', 'Inodes total'], graph: ['LowerDir', 'MergedDir', 'UpperDir', 'WorkDir'] },
  btrfs: { status: ['Build Version', 'Library Version', 'Pool', 'Pool Size', 'Pool Used'], graph: ['Subvolume'] },
  zfs: { status: ['Zpool', 'Zpool Health', 'Parent Dataset', 'Compression', 'Checksum'], graph: ['Dataset', 'Mountpoint'] },
  devicemapper: {
    status: ['Pool Name', 'Base Device Size', 'Data Space Used', 'Data Space Total', 'Metadata Space Used', 'Metadata Space Total', 'Mechanism'],
    graph: ['DeviceId', 'DeviceName', 'DeviceSize'],
  },
  aufs: { status: ['Root Dir', 'Backing Filesystem', 'Dirs', 'Dirperm1 Supported'], graph: [] },
  vfs: { status: [], graph: [] },
};
const CASES = ALL_ENGINE_DRIVERS.map((d) => ({ ...d, ...SHOWN[d.name]! }));
let zpool: ZfsPool | undefined;

describe("each driver's info status lines and inspect GraphDriver.Data", () => {
  let archive = '';
  before(async () => {
    const img = await busyboxImage();
    archive = await dockerArchive(img.layout, img.ref, join(work, 'busybox.tar'), 'busybox:latest');
    if (isRoot && hasZfsTools) zpool = await createZfsPool('512M');
  });
  after(async () => {
    await zpool?.close();
  });

  for (const c of CASES) {
    test(c.name, async (t: TestContext) => {
      if (!requireCap(t, c.what, c.have)) return;
      const tmp = await mkdtemp(join(work, `gd-${c.name}-`));
      const engine = await Engine.open({ dataRoot: join(tmp, 'data'), storageDriver: c.name, storageOpts: c.opts(tmp, zpool) });
      try {
        await engine.load(createReadStream(archive));
        const ctr = await engine.create({ image: 'busybox' });
        const info = await engine.info();
        assert.equal(info.Driver, c.name);
        const status = Object.fromEntries(info.DriverStatus);
        for (const k of c.status) assert.ok(status[k] !== undefined && status[k] !== '', `${c.name} info lacks ${k}: ${JSON.stringify(info.DriverStatus)}`);
        const inspect = await engine.inspectContainer(ctr.ID);
        assert.equal(inspect.GraphDriver.Name, c.name);
        assert.deepEqual(Object.keys(inspect.GraphDriver.Data).sort(), [...c.graph].sort());
        for (const v of Object.values(inspect.GraphDriver.Data)) assert.ok(v !== '', `${c.name}: an empty GraphDriver.Data value`);
        if (c.name === 'zfs') assert.match(inspect.GraphDriver.Data.Dataset!, new RegExp(`^${zpool!.name}/gd-zfs-`));
        if (c.name === 'devicemapper') assert.equal(inspect.GraphDriver.Data.DeviceSize, String(256 * 1024 * 1024));
        // The paths shown are the container's own layer.
        for (const [k, v] of Object.entries(inspect.GraphDriver.Data)) if (k.endsWith('Dir') || k === 'Subvolume' || k === 'Mountpoint') assert.ok(v.startsWith(join(tmp, 'data')), `${k}=${v}`);
        await engine.rm(ctr.ID);
      } finally {
        await engine.close().catch(() => undefined);
        unmountUnder(tmp);
        await rm(tmp, { recursive: true, force: true });
      }
    });
  }
});
