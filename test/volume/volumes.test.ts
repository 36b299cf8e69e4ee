import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, existsSync } from 'node:fs';
import { mkdtemp, mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { busyboxImage, dockerArchive } from '../fixtures/images.js';
import { runOk } from '../fixtures/run.js';
import { collect, ENGINE_DRIVERS, openTestStore, storeListing, type TestStore } from '../helpers/engine.js';
import { isRoot, requireCap } from '../helpers/caps.js';
import type { StrataError } from '../../src/errors.js';

interface InspectMount {
  Type: string;
  Name?: string;
  Source: string;
  Destination: string;
  Driver?: string;
  Mode: string;
  RW: boolean;
  Propagation: string;
}

for (const driver of ENGINE_DRIVERS) {
  describe(`volumes (${driver})`, () => {
    let store: TestStore;
    let work: string;

    before(async () => {
      work = await mkdtemp(join(tmpdir(), 'strata-vol-'));
      const img = await busyboxImage();
      const archive = await dockerArchive(img.layout, img.ref, join(work, 'busybox.tar'), 'busybox:latest');
      store = await openTestStore(driver);
      await store.engine.load(createReadStream(archive));
    });
    after(async () => {
      await store?.dispose();
      await rm(work, { recursive: true, force: true });
    });

    const e = () => store.engine;
    const mounts = async (c: string) => (await e().inspectContainer(c)).Mounts as InspectMount[];
    const readOut = async (c: string, p: string) => {
      const dst = join(work, `out-${Math.random().toString(16).slice(2)}`);
      await e().copyFrom(c, p, dst);
      return readFile(dst, 'utf8');
    };
    const writeIn = async (c: string, p: string, content: string) => {
      const src = join(work, `in-${Math.random().toString(16).slice(2)}`);
      await writeFile(src, content);
      await e().copyTo(c, p, { path: src });
    };

    async function rejectsCleanly(op: () => Promise<unknown>, code: string, pattern: RegExp): Promise<void> {
      const before = await storeListing(store.root);
      await assert.rejects(op(), (err: StrataError) => {
        assert.equal(err.code, code, `${err.code}: ${err.message}`);
        assert.match(err.message, pattern);
        assert.ok(!err.message.includes('\n'), 'one line');
        return true;
      });
      assert.deepEqual(await storeListing(store.root), before, 'the store is exactly as before');
    }

    it('volume create / inspect / ls filters, with Docker layout and fields', async () => {
      const v = await e().createVolume({ name: 'vol-a.1', labels: { team: 'x' } });
      assert.equal(v.Mountpoint, join(store.root, 'volumes/vol-a.1/_data'));
      assert.ok((await stat(v.Mountpoint)).isDirectory());
      assert.deepEqual(JSON.parse(await readFile(join(store.root, 'volumes/vol-a.1/opts.json'), 'utf8')), { MountType: '', MountOpts: '', MountDevice: '', Quota: { Size: 0 } });
      const i = await e().inspectVolume('vol-a.1');
      assert.deepEqual({ ...i, CreatedAt: '' }, { CreatedAt: '', Driver: 'local', Labels: { team: 'x' }, Mountpoint: v.Mountpoint, Name: 'vol-a.1', Options: {}, Scope: 'local' });
      assert.match(i.CreatedAt, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
      // Creating an existing name returns it.
      assert.equal((await e().createVolume({ name: 'vol-a.1' })).Mountpoint, v.Mountpoint);
      const anon = await e().createVolume();
      assert.match(anon.Name, /^[a-f0-9]{64}$/);
      await e().createVolume({ name: 'vol-b' });
      const names = async (f: string[]) => (await e().volumes(f)).map((x) => x.Name).sort();
      assert.deepEqual(await names(['label=team=x']), ['vol-a.1']);
      assert.deepEqual(await names(['label=team']), ['vol-a.1']);
      assert.deepEqual(await names(['name=vol-']), ['vol-a.1', 'vol-b']);
      await e().create({ image: 'busybox', name: 'uses-b', mounts: { volumes: ['vol-b:/b'] } });
      assert.deepEqual(await names(['dangling=true', 'name=vol']), ['vol-a.1']);
      assert.deepEqual(await names(['dangling=false']), ['vol-b']);
      await e().rm('uses-b');
      for (const n of ['vol-a.1', 'vol-b', anon.Name]) await e().removeVolume(n);
      await e().removeVolume('vol-gone', { force: true });
    });

    it('-o type=none,o=bind,device=DIR mounts the device on the volume at use', async (t) => {
      if (!requireCap(t, 'root (mount)', isRoot)) return;
      const dev = join(work, 'device');
      await mkdir(dev);
      await writeFile(join(dev, 'on-device'), 'dev\n');
      const v = await e().createVolume({ name: 'bound', driverOpts: { type: 'none', o: 'bind', device: dev } });
      assert.deepEqual(v.Options, { type: 'none', device: dev, o: 'bind' });
      assert.deepEqual(await readdir(v.Mountpoint), [], 'not mounted while unused');
      await e().create({ image: 'busybox', name: 'on-dev', mounts: { volumes: ['bound:/d'] } });
      assert.equal(await readOut('on-dev', '/d/on-device'), 'dev\n');
      await writeIn('on-dev', '/d/written', 'w\n');
      assert.equal(await readFile(join(dev, 'written'), 'utf8'), 'w\n', 'writes land on the device');
      assert.deepEqual(await readdir(v.Mountpoint), [], 'unmounted after use');
      await e().rm('on-dev');
      await e().removeVolume('bound');
    });

    it('a read-only bind refuses writes, a read-write bind writes through to the host', async () => {
      const ro = join(work, 'ro-src');
      const rw = join(work, 'rw-src');
      await mkdir(ro);
      await mkdir(rw);
      await writeFile(join(ro, 'keep'), 'keep\n');
      const hostFile = join(work, 'single-file');
      await writeFile(hostFile, 'single\n');
      await e().create({ image: 'busybox', name: 'binds', mounts: { volumes: [`${ro}:/ro:ro`, `${hostFile}:/etc/single`], mounts: [`type=bind,source=${rw},target=/rw`] } });
      const m = await mounts('binds');
      assert.deepEqual(m.find((x) => x.Destination === '/ro'), { Type: 'bind', Source: ro, Destination: '/ro', Mode: 'ro', RW: false, Propagation: 'rprivate' });
      const insp = await e().inspectContainer('binds');
      assert.deepEqual(insp.HostConfig.Binds, [`${ro}:/ro:ro`, `${hostFile}:/etc/single`]);
      assert.deepEqual(insp.HostConfig.Mounts, [{ Type: 'bind', Source: rw, Target: '/rw' }]);
      // (A read first: the driver's first mount of a container leaves its own bookkeeping, which is not a change.)
      assert.equal(await readOut('binds', '/ro/keep'), 'keep\n');
      await rejectsCleanly(() => writeIn('binds', '/ro/new', 'x'), 'ErrForbidden', /read-only/);
      assert.deepEqual(await readdir(ro), ['keep']);
      await writeIn('binds', '/rw/new', 'through\n');
      assert.equal(await readFile(join(rw, 'new'), 'utf8'), 'through\n');
      assert.equal(await readOut('binds', '/etc/single'), 'single\n', 'a file bind');
      assert.deepEqual(await e().diff('binds'), [], 'bind content is not in the container layer');
      await e().rm('binds', { volumes: true });
      assert.ok(existsSync(join(rw, 'new')), 'rm -v never touches binds');
    });

    it('a named volume is filled from the image and shared by two containers', async () => {
      await e().create({ image: 'busybox', name: 'sh1', mounts: { volumes: ['shared:/etc'] } });
      await e().create({ image: 'busybox', name: 'sh2', mounts: { mounts: ['type=volume,source=shared,target=/etc,readonly'] } });
      const data = (await e().inspectVolume('shared')).Mountpoint;
      assert.ok((await readdir(data)).includes('passwd'), 'populated from the image');
      const img = join(work, 'etc-img');
      await e().copyFrom('sh1', '/etc', img);
      await runOk('diff', ['-r', '--no-dereference', img, data]);
      const st = await stat(join(data, 'passwd'));
      assert.equal(st.mode & 0o777, (await stat(join(img, 'passwd'))).mode & 0o777);
      await writeIn('sh1', '/etc/from-sh1', 'hello\n');
      assert.equal(await readOut('sh2', '/etc/from-sh1'), 'hello\n');
      await rejectsCleanly(() => writeIn('sh2', '/etc/no', 'x'), 'ErrForbidden', /read-only/);
      assert.equal((await mounts('sh2'))[0]!.RW, false);
      await e().create({ image: 'busybox', name: 'nocopy', mounts: { volumes: ['empty-nc:/etc:nocopy'] } });
      assert.deepEqual(await readdir((await e().inspectVolume('empty-nc')).Mountpoint), [], 'nocopy leaves the volume empty');
      for (const c of ['sh1', 'sh2', 'nocopy']) await e().rm(c, { volumes: true });
      assert.ok(await e().inspectVolume('shared'), 'rm -v keeps named volumes');
      await e().removeVolume('shared');
      await e().removeVolume('empty-nc');
    });

    it('a volume container, never run, serves its volumes through --volumes-from; rm -v and prune', async () => {
      const vc = await e().create({ image: 'busybox', name: 'vc', mounts: { volumes: ['/data', 'vc-named:/named'] } });
      const vcm = await mounts('vc');
      const anon = vcm.find((m) => m.Destination === '/data')!;
      assert.match(anon.Name!, /^[a-f0-9]{64}$/);
      assert.deepEqual((await e().inspectContainer('vc')).Config.Volumes, { '/data': {} });
      await e().create({ image: 'busybox', name: 'user1', mounts: { volumesFrom: ['vc'] } });
      await e().create({ image: 'busybox', name: 'user2', mounts: { volumesFrom: ['vc:ro'] } });
      assert.deepEqual((await mounts('user1')).map((m) => [m.Name, m.RW]), vcm.map((m) => [m.Name, true]));
      assert.deepEqual((await mounts('user2')).map((m) => m.RW), [false, false]);
      await writeIn('user1', '/data/file', 'shared data\n');
      assert.equal(await readOut('user2', '/data/file'), 'shared data\n');
      assert.equal(await readOut('vc', '/data/file'), 'shared data\n');
      await rejectsCleanly(() => writeIn('user2', '/data/x', 'x'), 'ErrForbidden', /read-only/);

      await rejectsCleanly(() => e().removeVolume(anon.Name!), 'ErrConflict', new RegExp(`remove ${anon.Name}: volume is in use - \\[.*${vc.ID}`));
      // Default prune: unused anonymous volumes only; these are in use.
      await e().createVolume({ name: 'unused-named' });
      const unusedAnon = await e().createVolume();
      const p1 = await e().pruneVolumes();
      assert.deepEqual(p1.VolumesDeleted, [unusedAnon.Name]);
      // rm -v of the volume container: its anonymous volume is still used by user1/user2, so it stays.
      await e().rm('vc', { volumes: true });
      assert.ok(await e().inspectVolume(anon.Name!));
      await e().rm('user1', { volumes: true });
      assert.ok(await e().inspectVolume(anon.Name!), 'user2 still uses it');
      await e().rm('user2', { volumes: true });
      await assert.rejects(e().inspectVolume(anon.Name!), /no such volume/);
      assert.ok(await e().inspectVolume('vc-named'), 'named volumes stay');
      const p2 = await e().pruneVolumes({ all: true });
      assert.deepEqual(p2.VolumesDeleted.sort(), ['unused-named', 'vc-named']);
      assert.deepEqual(await e().volumes(), []);
    });

    it('a data-packed volume container: image content under VOLUME reaches --volumes-from users', async () => {
      await e().create({ image: 'busybox', name: 'packer' });
      const payload = join(work, 'payload');
      await mkdir(payload);
      await writeFile(join(payload, 'db.txt'), 'packed\n');
      await e().copyTo('packer', '/', { path: payload });
      const img = await e().commit('packer', { reference: 'datapack:1', changes: ['VOLUME /payload'] });
      assert.ok(img.config.config?.Volumes?.['/payload']);
      await e().create({ image: 'datapack:1', name: 'packed' });
      const vol = (await mounts('packed'))[0]!;
      assert.equal(vol.Destination, '/payload');
      assert.equal(await readFile(join(vol.Source, 'db.txt'), 'utf8'), 'packed\n');
      await e().create({ image: 'busybox', name: 'consumer1', mounts: { volumesFrom: ['packed'] } });
      await e().create({ image: 'busybox', name: 'consumer2', mounts: { volumesFrom: ['packed'] } });
      assert.equal(await readOut('consumer1', '/payload/db.txt'), 'packed\n');
      await writeIn('consumer1', '/payload/new.txt', 'n\n');
      assert.equal(await readOut('consumer2', '/payload/new.txt'), 'n\n');
      for (const c of ['consumer1', 'consumer2', 'packed', 'packer']) await e().rm(c, { volumes: true });
      assert.deepEqual(await e().volumes(), [], 'the anonymous volume went with its last user');
      await e().rmi('datapack:1');
    });

    it('diff, commit and export leave volume content out', async () => {
      await e().create({ image: 'busybox', name: 'vx', mounts: { volumes: ['/vdata'] } });
      await writeIn('vx', '/vdata/secret', 'in volume\n');
      await writeIn('vx', '/in-layer', 'in layer\n');
      assert.deepEqual(await e().diff('vx'), [{ kind: 'A', path: '/in-layer' }]);
      const tar = await collect(await e().export('vx'));
      const listing = join(work, 'export.tar');
      await writeFile(listing, tar);
      const list = (await runOk('tar', ['-tf', listing])).stdout.split('\n');
      assert.ok(list.includes('in-layer'));
      assert.ok(!list.some((l) => l.includes('secret')));
      const img = await e().commit('vx', { reference: 'vx:1' });
      await e().create({ image: 'vx:1', name: 'vx2', mounts: { volumes: ['/other'] } });
      // The committed image has the layer file but no volume content anywhere.
      assert.equal(await readOut('vx2', '/in-layer'), 'in layer\n');
      await assert.rejects(e().copyFrom('vx2', '/vdata/secret', join(work, 'nope')), /Could not find/);
      assert.ok(img.id);
      await e().rm('vx2', { volumes: true });
      await e().rm('vx', { volumes: true });
      await e().rmi('vx:1');
    });

    it('system df: volume sizes as du counts them, links as containers using them', async () => {
      await e().create({ image: 'busybox', name: 'dfc', mounts: { volumes: ['dfvol:/etc'] } });
      await e().createVolume({ name: 'dfidle' });
      await writeIn('dfc', '/etc/big', 'x'.repeat(100_000));
      const du = await e().df();
      const data = (await e().inspectVolume('dfvol')).Mountpoint;
      const files = (await runOk('find', [data, '!', '-type', 'd'])).stdout.trim().split('\n');
      const duTotal = Number((await runOk('du', ['-b', '-c', ...files])).stdout.trim().split('\n').at(-1)!.split('\t')[0]);
      const v = du.Volumes.find((x) => x.Name === 'dfvol')!;
      assert.equal(v.UsageData.Size, duTotal);
      assert.ok(v.UsageData.Size > 100_000);
      assert.equal(v.UsageData.RefCount, 1);
      assert.deepEqual(du.Volumes.find((x) => x.Name === 'dfidle')!.UsageData, { Size: 0, RefCount: 0 });
      await e().rm('dfc');
      await e().pruneVolumes({ all: true });
    });

    it('bad input: one clear line, nothing changed', async () => {
      await e().create({ image: 'busybox', name: 'holder', mounts: { volumes: ['held:/h'] } });
      const create = (mounts: object) => () => e().create({ image: 'busybox', name: 'bad', mounts });
      await rejectsCleanly(create({ volumes: ['/does/not/exist:/x'] }), 'ErrInvalidArgument', /bind source path does not exist: \/does\/not\/exist/);
      await rejectsCleanly(create({ mounts: ['type=bind,source=/does/not/exist,target=/x'] }), 'ErrInvalidArgument', /bind source path does not exist/);
      await rejectsCleanly(create({ volumes: ['x:/data'] }), 'ErrInvalidArgument', /invalid characters for a local volume name/);
      await rejectsCleanly(create({ volumes: ['bad name:/data'] }), 'ErrInvalidArgument', /invalid characters/);
      await rejectsCleanly(create({ volumes: ['vol:relative'] }), 'ErrInvalidArgument', /must be absolute/);
      await rejectsCleanly(create({ volumes: ['vol:/d:bogus'] }), 'ErrInvalidArgument', /invalid mode: bogus/);
      await rejectsCleanly(create({ volumes: ['/a:ro'] }), 'ErrInvalidArgument', /invalid volume specification/);
      await rejectsCleanly(create({ volumes: ['v1:/d', 'v2:/d'] }), 'ErrInvalidArgument', /Duplicate mount point: \/d/);
      await rejectsCleanly(create({ mounts: ['type=nfs,target=/x'] }), 'ErrInvalidArgument', /invalid mount type "nfs"/);
      await rejectsCleanly(create({ mounts: ['type=volume,target=/x,colour=red'] }), 'ErrInvalidArgument', /unexpected key 'colour'/);
      await rejectsCleanly(create({ mounts: ['type=volume,source=v'] }), 'ErrInvalidArgument', /Target must not be empty/);
      await rejectsCleanly(create({ mounts: ['type=bind,source=/tmp,target=/x,volume-nocopy'] }), 'ErrInvalidArgument', /type=volume only/);
      await rejectsCleanly(create({ volumesFrom: ['no-such-container'] }), 'ErrNotFound', /No such container: no-such-container/);
      await rejectsCleanly(() => e().createVolume({ name: '-bad' }), 'ErrInvalidArgument', /invalid characters/);
      await rejectsCleanly(() => e().createVolume({ name: 'ok-name', driverOpts: { device: '/dev/null' } }), 'ErrInvalidArgument', /missing required option: "type"/);
      await rejectsCleanly(() => e().createVolume({ name: 'ok-name', driverOpts: { color: 'red' } }), 'ErrInvalidArgument', /invalid option: "color"/);
      await rejectsCleanly(() => e().removeVolume('held'), 'ErrConflict', /remove held: volume is in use/);
      await rejectsCleanly(() => e().removeVolume('never-made'), 'ErrNotFound', /no such volume/);
      await e().rm('holder');
      await e().removeVolume('held');
    });
  });
}
