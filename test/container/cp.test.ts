import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, existsSync } from 'node:fs';
import { chown, lstat, mkdir, mkdtemp, readFile, readdir, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { busyboxImage, dockerArchive } from '../fixtures/images.js';
import { runOk } from '../fixtures/run.js';
import { collect, ENGINE_DRIVERS, openTestStore, storeListing, type TestStore } from '../helpers/engine.js';
import type { StrataError } from '../../src/errors.js';

// aufs: the copy into the container goes through its union (openFs), with no mount.
for (const driver of [...ENGINE_DRIVERS, 'aufs']) {
  describe(`cp (${driver})`, () => {
    let store: TestStore;
    let work: string;
    let src: string;
    let n = 0;

    before(async () => {
      work = await mkdtemp(join(tmpdir(), 'strata-cp-'));
      const img = await busyboxImage();
      const archive = await dockerArchive(img.layout, img.ref, join(work, 'busybox.tar'), 'busybox:latest');
      store = await openTestStore(driver);
      await store.engine.load(createReadStream(archive));
      // Host sources: a file, and a directory with a nested one.
      src = join(work, 'src');
      await mkdir(join(src, 'dir/sub'), { recursive: true });
      await writeFile(join(src, 'file.txt'), 'F\n');
      await writeFile(join(src, 'dir/a'), 'A\n');
      await writeFile(join(src, 'dir/sub/b'), 'B\n');
      await chown(join(src, 'dir/a'), 1000, 1000);
      await store.engine.create({ image: 'busybox', name: 'ctr' });
    });
    after(async () => {
      await store?.dispose();
      await rm(work, { recursive: true, force: true });
    });

    const e = () => store.engine;
    const fresh = () => join(work, `out-${n++}`);
    /** Names in the container below `p`, read back through cp (as a tar listing). */
    const listIn = async (c: string, p: string) => {
      const tar = join(work, `list-${n++}.tar`);
      await writeFile(tar, await collect(await e().copyFromTar(c, p)));
      return (await runOk('tar', ['-tvf', tar, '--numeric-owner'])).stdout;
    };
    const namesIn = async (c: string, p: string) =>
      (await listIn(c, p))
        .trim()
        .split('\n')
        .map((l) => l.split(/\s+/).slice(5).join(' ').replace(/\/$/, ''))
        .sort();
    const readIn = async (c: string, p: string) => {
      const out = fresh();
      await e().copyFrom(c, p, out);
      return readFile(out, 'utf8');
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

    it("into the container: docker's decision table", async () => {
      // file -> missing path: a file of that name
      await e().copyTo('ctr', '/new.txt', { path: join(src, 'file.txt') });
      assert.equal(await readIn('ctr', '/new.txt'), 'F\n');
      // file -> existing directory: copied into it
      await e().copyTo('ctr', '/tmp', { path: join(src, 'file.txt') });
      assert.equal(await readIn('ctr', '/tmp/file.txt'), 'F\n');
      // file -> existing file: replaced
      await writeFile(join(work, 'other'), 'OTHER\n');
      await e().copyTo('ctr', '/new.txt', { path: join(work, 'other') });
      assert.equal(await readIn('ctr', '/new.txt'), 'OTHER\n');
      // dir -> missing path: the directory under the new name
      await e().copyTo('ctr', '/newdir', { path: join(src, 'dir') });
      assert.deepEqual(await namesIn('ctr', '/newdir'), ['newdir', 'newdir/a', 'newdir/sub', 'newdir/sub/b']);
      // dir -> existing directory: nested under its own name
      await e().copyTo('ctr', '/newdir/', { path: join(src, 'dir') });
      assert.deepEqual(await namesIn('ctr', '/newdir/dir'), ['dir', 'dir/a', 'dir/sub', 'dir/sub/b']);
      // dir/. -> existing directory: its content
      await e().copyTo('ctr', '/tmp', { path: join(src, 'dir') + '/.' });
      assert.equal(await readIn('ctr', '/tmp/sub/b'), 'B\n');
      assert.ok(!(await namesIn('ctr', '/tmp')).includes('tmp/dir'));
      // dir -> existing file, file -> missing path with a trailing '/', missing parent, file -> file/: errors, nothing changed
      await rejectsCleanly(() => e().copyTo('ctr', '/new.txt', { path: join(src, 'dir') }), 'ErrInvalidArgument', /cannot copy a directory to a file/);
      await rejectsCleanly(() => e().copyTo('ctr', '/missingdir/', { path: join(src, 'file.txt') }), 'ErrNotFound', /destination directory ctr:\/missingdir\/ does not exist/);
      await rejectsCleanly(() => e().copyTo('ctr', '/nope/x', { path: join(src, 'file.txt') }), 'ErrNotFound', /parent directory does not exist/);
      await rejectsCleanly(() => e().copyTo('ctr', '/new.txt/', { path: join(src, 'file.txt') }), 'ErrInvalidArgument', /not a directory/);
      await rejectsCleanly(() => e().copyTo('ctr', '/tmp', { path: join(work, 'no-such-source') }), 'ErrNotFound', /no such file or directory/);
      await rejectsCleanly(() => e().copyTo('no-such-container', '/tmp', { path: join(src, 'file.txt') }), 'ErrNotFound', /No such container: no-such-container/);
      // All of it is the container's own change; the image is untouched.
      const diff = (await e().diff('ctr')).map((ch) => `${ch.kind} ${ch.path}`);
      assert.ok(diff.includes('A /new.txt') && diff.includes('A /newdir/dir/sub/b') && diff.includes('A /tmp/sub/b'), diff.join(','));
    });

    it("out of the container: the same table on the host, and '-' as a tar stream", async () => {
      const o = fresh();
      await e().copyFrom('ctr', '/etc/passwd', o);
      assert.match(await readFile(o, 'utf8'), /^root:/);
      const d = fresh();
      await mkdir(d);
      await e().copyFrom('ctr', '/etc/passwd', d);
      assert.ok(existsSync(join(d, 'passwd')));
      await e().copyFrom('ctr', '/newdir', join(d, 'copy'));
      assert.deepEqual((await readdir(join(d, 'copy'))).sort(), ['a', 'dir', 'sub']);
      await e().copyFrom('ctr', '/newdir', d);
      assert.ok(existsSync(join(d, 'newdir/sub/b')));
      await e().copyFrom('ctr', '/newdir/.', d);
      assert.ok(existsSync(join(d, 'sub/b')) && existsSync(join(d, 'a')));
      await assert.rejects(e().copyFrom('ctr', '/newdir', join(d, 'passwd')), /cannot copy a directory to a file/);
      await assert.rejects(e().copyFrom('ctr', '/etc/passwd', join(d, 'missing/x')), /parent directory does not exist/);
      await assert.rejects(e().copyFrom('ctr', '/etc/passwd', join(d, 'missing') + '/'), /does not exist/);
      await assert.rejects(e().copyFrom('ctr', '/no/such', fresh()), (err: StrataError) => err.code === 'ErrNotFound' && /Could not find the file \/no\/such/.test(err.message));
      // Owners: kept with -a, this process' without.
      await e().copyTo('ctr', '/owned', { path: join(src, 'dir') }, { archive: true });
      const plain = fresh();
      const kept = fresh();
      await e().copyFrom('ctr', '/owned', plain);
      await e().copyFrom('ctr', '/owned', kept, { archive: true });
      assert.equal((await stat(join(plain, 'a'))).uid, process.getuid!());
      assert.equal((await stat(join(kept, 'a'))).uid, 1000);
      // '-': a tar stream that GNU tar reads, named after the source.
      assert.match(await listIn('ctr', '/owned'), /1000\/1000 +2 .* owned\/a/);
      assert.deepEqual(await namesIn('ctr', '/owned'), ['owned', 'owned/a', 'owned/sub', 'owned/sub/b']);
    });

    it('-a keeps owners going in; without it the container root owns what is copied; a tar on stdin', async () => {
      await e().copyTo('ctr', '/plain', { path: join(src, 'dir') });
      assert.match(await listIn('ctr', '/plain/a'), /^-rw-r--r-- 0\/0 /);
      assert.match(await listIn('ctr', '/owned/a'), /^-rw-r--r-- 1000\/1000 /);
      const tar = join(work, 'in.tar');
      await runOk('tar', ['-C', src, '--numeric-owner', '-cf', tar, 'dir', 'file.txt']);
      await e().copyTo('ctr', '/tmp', { tar: createReadStream(tar) }, { archive: true });
      assert.equal(await readIn('ctr', '/tmp/dir/sub/b'), 'B\n');
      assert.match(await listIn('ctr', '/tmp/dir/a'), / 1000\/1000 /);
      await rejectsCleanly(() => e().copyTo('ctr', '/new.txt', { tar: createReadStream(tar) }), 'ErrInvalidArgument', /must be a directory/);
    });

    it("symlinks in the container path resolve inside the container, never on the host; -L follows the source", async () => {
      const links = join(work, 'links');
      await mkdir(links);
      await symlink('/etc', join(links, 'etclink'));
      await symlink('../../../../../../../../tmp', join(links, 'up'));
      await e().copyTo('ctr', '/', { path: join(links, 'etclink') });
      await e().copyTo('ctr', '/', { path: join(links, 'up') });
      const marker = `strata-cp-${randomBytes(6).toString('hex')}`;
      await writeFile(join(work, marker), 'inside\n');
      await e().copyTo('ctr', '/etclink/', { path: join(work, marker) });
      await e().copyTo('ctr', '/up', { path: join(work, marker) });
      assert.ok(!existsSync(join('/etc', marker)) && !existsSync(join('/tmp', marker)), 'nothing written on the host');
      assert.equal(await readIn('ctr', `/etc/${marker}`), 'inside\n');
      assert.equal(await readIn('ctr', `/tmp/${marker}`), 'inside\n');
      assert.equal(await readIn('ctr', '/etclink/passwd'), await readIn('ctr', '/etc/passwd'));
      assert.notEqual(await readIn('ctr', '/etclink/passwd'), await readFile('/etc/passwd', 'utf8'));
      // Without -L the link itself is copied, with -L what it points to, under the link's name.
      const noL = fresh();
      await e().copyFrom('ctr', '/etclink', noL);
      assert.equal(await readlink(noL), '/etc');
      const withL = fresh();
      await e().copyFrom('ctr', '/etclink', withL, { followLink: true });
      assert.ok((await lstat(withL)).isDirectory());
      assert.ok((await readdir(withL)).includes(marker));
    });

    it('a path under a volume reads and writes the volume, not the layer; read-only rootfs and volumes', async () => {
      await e().create({ image: 'busybox', name: 'vc', mounts: { volumes: ['cpvol:/data', 'cpro:/ro:ro'], readOnly: true } });
      const data = (await e().inspectVolume('cpvol')).Mountpoint;
      await e().copyTo('vc', '/data', { path: join(src, 'dir') });
      await e().copyTo('vc', '/data/f', { path: join(src, 'file.txt') });
      assert.equal(await readFile(join(data, 'dir/sub/b'), 'utf8'), 'B\n');
      assert.equal(await readFile(join(data, 'f'), 'utf8'), 'F\n');
      assert.deepEqual(await e().diff('vc'), [], 'the container layer holds none of it');
      // A symlink inside the volume to /etc is the container's /etc.
      const lnk = join(work, 'vlinks');
      await mkdir(lnk);
      await symlink('/etc', join(lnk, 'toetc'));
      await e().copyTo('vc', '/data', { path: join(lnk, 'toetc') });
      assert.equal(await readIn('vc', '/data/toetc/passwd'), await readIn('vc', '/etc/passwd'));
      assert.deepEqual(await namesIn('vc', '/data/dir'), ['dir', 'dir/a', 'dir/sub', 'dir/sub/b']);
      await readIn('vc', '/etc/passwd');
      // --read-only: the rootfs refuses, even through the volume's link to /etc; a ro volume refuses.
      await rejectsCleanly(() => e().copyTo('vc', '/tmp', { path: join(src, 'file.txt') }), 'ErrForbidden', /container rootfs is marked read-only/);
      await rejectsCleanly(() => e().copyTo('vc', '/data/toetc/', { path: join(src, 'file.txt') }), 'ErrForbidden', /rootfs is marked read-only/);
      await rejectsCleanly(() => e().copyTo('vc', '/ro', { path: join(src, 'file.txt') }), 'ErrForbidden', /mounted volume is marked read-only/);
      // A copy whose tree reaches a mount point below its destination writes that part into the volume (cp-mounts.test.ts has the rest).
      await e().create({ image: 'busybox', name: 'cross', mounts: { volumes: ['cpvol:/data'] } });
      await readIn('cross', '/data/f');
      const tree = join(work, 'crossing');
      await mkdir(join(tree, 'data'), { recursive: true });
      await writeFile(join(tree, 'data/x'), 'x\n');
      await e().copyTo('cross', '/', { path: tree + '/.' });
      assert.equal(await readFile(join(data, 'x'), 'utf8'), 'x\n');
      assert.deepEqual(await e().diff('cross'), [], 'nothing in the layer under the mount');
      await e().copyTo('cross', '/', { path: tree });
      assert.deepEqual(await e().diff('cross'), [{ kind: 'A', path: '/crossing' }, { kind: 'A', path: '/crossing/data' }, { kind: 'A', path: '/crossing/data/x' }]);
      await e().rm('cross');
      await e().rm('vc', { volumes: true });
      await e().removeVolume('cpvol');
      await e().removeVolume('cpro');
    });
  });
}
