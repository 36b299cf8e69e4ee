import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { constants } from 'node:fs';
import { run, runOk, type RunResult } from '../fixtures/run.js';
import { unmountUnder } from '../fixtures/unmount.js';
import { mountsUnder } from '../../src/driver/mount-table.js';
import { native } from '../../src/native/native.js';
import { isRoot, requireCap } from '../helpers/caps.js';

const BIN = resolve(import.meta.dirname, '../../bin/strata');
const LAYER_FS = resolve(import.meta.dirname, '../fixtures/aufs-container-fs.ts');
const NOBODY = 65534;
const asNobody = ['--reuid=65534', '--regid=65534', '--clear-groups'];

/**
 * The aufs driver's point: a user without root (and without /dev/fuse) imports an image, creates a
 * container, changes its files through the library, sees `diff`, commits, and builds on the commit,
 * with nothing mounted and every file of the data-root their own.
 */
test('aufs without root: import, create, change through openFs, diff, commit, cp in and out, export, save; no mount anywhere', async (t: TestContext) => {
  if (!requireCap(t, 'root (to switch to nobody with setpriv)', isRoot && existsSync('/usr/bin/setpriv'))) return;
  const work = await mkdtemp(join(tmpdir(), 'strata-aufs-rootless-'));
  try {
    await chmod(work, 0o755);
    const root = join(work, 'root');
    await mkdir(root);
    await chown(root, NOBODY, NOBODY);
    // A rootfs owned by root, with a device node: what an unprivileged user cannot recreate.
    const rootfs = join(work, 'rootfs');
    await mkdir(join(rootfs, 'etc'), { recursive: true });
    await mkdir(join(rootfs, 'var/lib/gone'), { recursive: true });
    await mkdir(join(rootfs, 'dev'));
    await writeFile(join(rootfs, 'etc/motd'), 'hi\n');
    await writeFile(join(rootfs, 'var/lib/gone/f'), 'f\n');
    native.mknod(join(rootfs, 'dev/null'), constants.S_IFCHR | 0o666, 1, 3);
    const tar = join(work, 'rootfs.tar');
    await runOk('tar', ['--numeric-owner', '-C', rootfs, '-cf', tar, '.']);
    await chmod(tar, 0o644);

    const strata = (args: string[]): Promise<RunResult> => run('setpriv', [...asNobody, BIN, '--data-root', root, '-s', 'aufs', ...args]);
    const ok = async (args: string[]): Promise<string> => {
      const r = await strata(args);
      assert.equal(r.code, 0, `strata ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    const layerFs = (mode: 'edit' | 'read', id: string) => runOk('setpriv', [...asNobody, process.execPath, '--import', 'tsx', LAYER_FS, mode, root, id], { cwd: resolve(import.meta.dirname, '../..') });

    assert.match(await ok(['import', tar, 'demo:1']), /^sha256:[a-f0-9]{64}\n$/);
    const c1 = (await ok(['create', '--name', 'c1', 'demo:1'])).trim();
    assert.equal(await ok(['diff', 'c1']), '');
    await layerFs('edit', c1);
    assert.equal(await ok(['diff', 'c1']), 'C /etc\nC /etc/motd\nA /new\nC /var\nC /var/lib\nD /var/lib/gone\n');
    assert.match(await ok(['ps', '-a', '-s']), /c1\s+12B \(virtual/);
    assert.match(await ok(['commit', '-m', 'rootless', 'c1', 'demo:2']), /^sha256:[a-f0-9]{64}\n$/);
    const c2 = (await ok(['create', '--name', 'c2', 'demo:2'])).trim();
    assert.equal(await ok(['diff', 'c2']), '');
    const seen = JSON.parse((await layerFs('read', c2)).stdout) as { motd: string; root: string[]; varLib: string[] };
    assert.deepEqual(seen, { motd: 'changed\n', root: ['.dockerenv', 'dev', 'etc', 'new', 'proc', 'sys', 'var'], varLib: [] });
    assert.match(await ok(['history', 'demo:2']), /rootless/);

    // cp in and out, export and save: all through the union or the layers' own directories, none mounts.
    const host = join(work, 'host');
    await mkdir(join(host, 'dir/sub'), { recursive: true });
    await writeFile(join(host, 'file.txt'), 'F\n');
    await writeFile(join(host, 'dir/sub/b'), 'B\n');
    const out = join(work, 'out');
    await mkdir(out);
    await chown(out, NOBODY, NOBODY);
    await ok(['cp', join(host, 'file.txt'), 'c2:/etc/file.txt']);
    await ok(['cp', join(host, 'dir'), 'c2:/var/']);
    assert.deepEqual(mountsUnder(work), []);
    assert.equal(await ok(['diff', 'c2']), 'C /etc\nA /etc/file.txt\nC /var\nA /var/dir\nA /var/dir/sub\nA /var/dir/sub/b\n');
    await ok(['cp', 'c2:/var/dir', join(out, 'dir')]);
    await ok(['cp', 'c2:/etc/file.txt', out]);
    assert.equal(await readFile(join(out, 'dir/sub/b'), 'utf8'), 'B\n');
    assert.equal(await readFile(join(out, 'file.txt'), 'utf8'), 'F\n');
    await ok(['export', '-o', join(out, 'c2.tar'), 'c2']);
    const exported = (await runOk('tar', ['-tf', join(out, 'c2.tar')])).stdout.split('\n');
    for (const name of ['etc/file.txt', 'etc/motd', 'new', 'var/dir/sub/b']) assert.ok(exported.includes(name), `${name} in the export`);
    const saved = join(out, 'demo.tar');
    await ok(['save', '-o', saved, 'demo:2']);
    assert.deepEqual(mountsUnder(work), []);
    // The saved image loads in a fresh store (as root) with the same layers.
    const layersOf = (json: string) => (JSON.parse(json) as Array<{ RootFS: { Layers: string[] } }>)[0]!.RootFS.Layers;
    const diffIDs = layersOf(await ok(['image', 'inspect', 'demo:2']));
    assert.equal(diffIDs.length, 2);
    const fresh = join(work, 'fresh');
    await runOk(BIN, ['--data-root', fresh, '-s', 'vfs', 'load', '-i', saved]);
    assert.deepEqual(layersOf((await runOk(BIN, ['--data-root', fresh, '-s', 'vfs', 'image', 'inspect', 'demo:2'])).stdout), diffIDs);
    assert.match(await ok(['info']), /Storage Driver: aufs\n/);

    // Where a process would need the union mounted, one clear line says why it cannot be.
    const mount = await strata(['mount', 'c1']);
    assert.notEqual(mount.code, 0);
    assert.match(mount.stderr, /^Error: aufs: cannot mount layer [a-f0-9]{64} for processes: \/dev\/fuse is not usable here/);
    assert.equal(mount.stderr.trim().split('\n').length, 1);

    assert.deepEqual(mountsUnder(work), []);
    // Nothing in the data-root belongs to anyone but the user.
    assert.equal(execFileSync('find', [root, out, '!', '-user', String(NOBODY)], { encoding: 'utf8' }), '');
    await ok(['rm', 'c1']);
    await ok(['rm', 'c2']);
    await ok(['rmi', 'demo:2']);
  } finally {
    unmountUnder(work);
    await rm(work, { recursive: true, force: true });
  }
});
