import assert from 'node:assert/strict';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { applyLayer } from '../../src/archive/apply-layer.js';
import { isStrataError } from '../../src/errors.js';
import { native } from '../../src/native/native.js';
import { isRoot, requireCap } from '../helpers/caps.js';
import { buildRichTree, chunks, fileChunks, gnuExtract, gnuTar, pythonTar } from './apply-fixtures.js';
import { treeManifest } from './tree-manifest.js';

describe('applyLayer', () => {
  let tmp: string;
  before(() => {
    tmp = mkdtempSync(join(tmpdir(), 'strata-apply-'));
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));
  const fresh = (name: string) => {
    const d = join(tmp, name);
    mkdirSync(d);
    return d;
  };

  it('extracts exactly what GNU tar extracts from the same archive', async (t) => {
    if (!requireCap(t, 'root', isRoot)) return;
    const src = fresh('rich-src');
    buildRichTree(src);
    const tarPath = join(tmp, 'rich.tar');
    gnuTar(src, tarPath);
    const ours = fresh('rich-ours');
    const theirs = fresh('rich-gnu');
    const seen: string[] = [];
    let trailer: Buffer | null = null;
    const { size } = await applyLayer(ours, fileChunks(tarPath), {
      whiteouts: 'naive',
      onEntry: (e) => seen.push(e.header.name),
      onTrailer: (b) => (trailer = b),
    });
    gnuExtract(tarPath, theirs);
    const expected = treeManifest(theirs);
    assert.deepEqual(treeManifest(ours), expected);
    // and both equal the source (GNU tar can be trusted with the tree it made)
    assert.deepEqual(expected, treeManifest(src));
    assert.ok(seen.includes('./etc/passwd'));
    assert.ok(trailer !== null && (trailer as Buffer).length >= 1024);
    assert.equal(size, 26 + 10 + (3 * 1024 * 1024 + 17) + 10 + 10 + 1 + 4 + 4);
  });

  it('replaces existing entries and merges metadata into existing directories', async () => {
    const root = fresh('replace');
    mkdirSync(join(root, 'dir'));
    writeFileSync(join(root, 'dir/keep'), 'kept');
    mkdirSync(join(root, 'was-dir/sub'), { recursive: true });
    writeFileSync(join(root, 'was-file'), 'old');
    writeFileSync(join(root, 'was-link-target'), 'target');
    const tar = pythonTar([
      { name: 'dir', type: 'dir', mode: 0o700, mtime: 1234 },
      { name: 'was-dir', type: 'file', data: 'now a file' },
      { name: 'was-file', type: 'dir', mode: 0o751 },
      { name: 'was-file/inner', data: 'inner' },
      { name: 'was-link-target', type: 'symlink', linkname: 'dir/keep' },
    ]);
    await applyLayer(root, chunks(tar), { whiteouts: 'naive' });
    assert.equal(readFileSync(join(root, 'dir/keep'), 'utf8'), 'kept');
    assert.equal(lstatSync(join(root, 'dir')).mode & 0o7777, 0o700);
    assert.equal(lstatSync(join(root, 'dir')).mtimeMs, 1234000);
    assert.equal(readFileSync(join(root, 'was-dir'), 'utf8'), 'now a file');
    assert.equal(lstatSync(join(root, 'was-file')).mode & 0o7777, 0o751);
    assert.equal(readFileSync(join(root, 'was-file/inner'), 'utf8'), 'inner');
    assert.ok(lstatSync(join(root, 'was-link-target')).isSymbolicLink());
  });

  it('naive whiteouts remove files and whole directories', async () => {
    const root = fresh('naive-wh');
    mkdirSync(join(root, 'a/b/c'), { recursive: true });
    writeFileSync(join(root, 'a/b/c/f'), 'x');
    writeFileSync(join(root, 'a/file'), 'x');
    writeFileSync(join(root, 'a/other'), 'x');
    const tar = pythonTar([
      { name: 'a/.wh.b', data: '' },
      { name: 'a/.wh.file', data: '' },
      { name: 'a/.wh..wh.plnk', type: 'dir' },
    ]);
    await applyLayer(root, chunks(tar), { whiteouts: 'naive' });
    assert.deepEqual(readdirSync(join(root, 'a')), ['other']);
  });

  it('naive opaque directories drop lower children but keep what the same layer wrote', async () => {
    const root = fresh('naive-opq');
    mkdirSync(join(root, 'd/lowerdir'), { recursive: true });
    mkdirSync(join(root, 'd/mixed'), { recursive: true });
    writeFileSync(join(root, 'd/lower'), 'x');
    writeFileSync(join(root, 'd/lowerdir/f'), 'x');
    writeFileSync(join(root, 'd/mixed/lower-in-mixed'), 'x');
    writeFileSync(join(root, 'outside'), 'x');
    const tar = pythonTar([
      { name: 'd', type: 'dir' },
      { name: 'd/new', data: 'new' },
      { name: 'd/mixed', type: 'dir' },
      { name: 'd/mixed/new2', data: 'n' },
      { name: 'd/.wh..wh..opq', data: '' },
    ]);
    await applyLayer(root, chunks(tar), { whiteouts: 'naive' });
    assert.deepEqual(readdirSync(join(root, 'd')).sort(), ['mixed', 'new']);
    assert.deepEqual(readdirSync(join(root, 'd/mixed')), ['new2']);
    assert.ok(existsSync(join(root, 'outside')));
  });

  it('overlay whiteouts become char 0:0 devices and opaque xattrs; forged overlay xattrs are dropped', async (t) => {
    if (!requireCap(t, 'root', isRoot)) return;
    const root = fresh('overlay-wh');
    writeFileSync(join(root, 'gone'), 'x');
    const tar = pythonTar([
      { name: 'gone', type: 'file', data: 'ignored' },
      { name: '.wh.gone', uid: 5, gid: 6 },
      { name: 'dir', type: 'dir' },
      { name: 'dir/.wh..wh..opq' },
      { name: 'dir/.wh.sub' },
      { name: 'forged', type: 'dir', xattrs: { 'trusted.overlay.opaque': 'y', 'user.ok': 'yes' } },
    ]);
    await applyLayer(root, chunks(tar), { whiteouts: 'overlay' });
    for (const [p, uid] of [['gone', 5], ['dir/sub', 0]] as const) {
      const st = lstatSync(join(root, p));
      assert.ok(st.isCharacterDevice(), p);
      assert.equal(st.rdev, 0);
      assert.equal(st.uid, uid);
    }
    assert.equal(native.lgetxattr(join(root, 'dir'), 'trusted.overlay.opaque')?.toString(), 'y');
    assert.deepEqual(readdirSync(join(root, 'dir')), ['sub']);
    assert.equal(native.lgetxattr(join(root, 'forged'), 'trusted.overlay.opaque'), null);
    assert.equal(native.lgetxattr(join(root, 'forged'), 'user.ok')?.toString(), 'yes');
  });

  it('small files written on worker threads keep tar order where paths meet', async () => {
    const root = fresh('batched');
    mkdirSync(join(root, 'lower-dir/sub'), { recursive: true });
    writeFileSync(join(root, 'lower-dir/sub/f'), 'lower');
    const many = Array.from({ length: 300 }, (_, i) => ({ name: `d${i % 7}/f${i}`, data: `file ${i}`, mode: 0o640 + (i % 8), uid: i % 3, gid: i % 5, mtime: 1600000000 + i }));
    const tar = pythonTar([
      ...Array.from({ length: 7 }, (_, i) => ({ name: `d${i}`, type: 'dir' })),
      ...many,
      { name: 'd1/f1', data: 'written twice: the last one wins' },
      { name: 'lower-dir', data: 'a file replaces the directory below it' },
      { name: 'link-to-pending', type: 'hardlink', linkname: 'd2/f2' },
      { name: 'd3/.wh.f3', data: '' },
      { name: 'd4', type: 'dir', mode: 0o750 },
    ]);
    const { size } = await applyLayer(root, chunks(tar, 4096), { whiteouts: 'naive' });
    for (const e of many.filter((e) => e.name !== 'd1/f1' && e.name !== 'd3/f3')) {
      const st = lstatSync(join(root, e.name));
      assert.equal(readFileSync(join(root, e.name), 'utf8'), e.data);
      assert.deepEqual([st.mode & 0o7777, st.uid, st.gid, st.mtimeMs], [e.mode, e.uid, e.gid, e.mtime * 1000], e.name);
    }
    assert.equal(readFileSync(join(root, 'd1/f1'), 'utf8'), 'written twice: the last one wins');
    assert.equal(readFileSync(join(root, 'lower-dir'), 'utf8'), 'a file replaces the directory below it');
    assert.equal(lstatSync(join(root, 'link-to-pending')).ino, lstatSync(join(root, 'd2/f2')).ino);
    assert.ok(!existsSync(join(root, 'd3/f3')));
    assert.equal(lstatSync(join(root, 'd4')).mode & 0o7777, 0o750);
    const bytes = (xs: { data: string }[]) => xs.reduce((n, e) => n + Buffer.byteLength(e.data), 0);
    assert.equal(size, bytes(many) + bytes([{ data: 'written twice: the last one wins' }, { data: 'a file replaces the directory below it' }]));
  });

  it('directories and symlinks made in batches keep tar order and metadata where entries outside the batches meet them', async () => {
    const root = fresh('batched-nodes');
    mkdirSync(join(root, 'lower-dir/sub'), { recursive: true });
    writeFileSync(join(root, 'lower-file'), 'lower');
    // 150 directories with a file each: batch boundaries fall between a directory and what goes into it.
    const dirs = Array.from({ length: 150 }, (_, i) => ({ name: `t/d${i}`, type: 'dir', mode: i % 2 ? 0o2750 : 0o700, uid: i % 4, gid: i % 3, mtime: 1500000000 + i }));
    const links = Array.from({ length: 40 }, (_, i) => ({ name: `t/d${i}/l`, type: 'symlink', linkname: `../d${i + 1}`, uid: i % 2, gid: 7, mtime: 1400000000 + i }));
    const tar = pythonTar([
      { name: 't', type: 'dir' },
      ...dirs.flatMap((d, i) => [d, { name: `${d.name}/f`, data: `in ${i}` }]),
      // Its parent is not in the tar: made at once, below a directory that may still be queued.
      { name: 't/d149/implicit/f', data: 'implicit parent' },
      ...links,
      // Outside the batches (xattrs, a hardlink) right below a directory that may still be queued.
      { name: 't/d149/x', data: 'with an xattr', xattrs: { 'user.k': 'v' } },
      { name: 't/d149/h', type: 'hardlink', linkname: 't/d148/f' },
      // Replacements: a directory over a lower file, a symlink over a lower tree, a directory over a queued symlink.
      { name: 'lower-file', type: 'dir', mode: 0o711 },
      { name: 'lower-dir', type: 'symlink', linkname: 'lower-file' },
      { name: 't/d0/l', type: 'dir', mode: 0o755 },
    ]);
    await applyLayer(root, chunks(tar, 4096), { whiteouts: 'naive' });
    for (const [i, d] of dirs.entries()) {
      const st = lstatSync(join(root, d.name));
      assert.ok(st.isDirectory(), d.name);
      assert.deepEqual([st.mode & 0o7777, st.uid, st.gid, st.mtimeMs], [d.mode, d.uid, d.gid, d.mtime * 1000], d.name);
      assert.equal(readFileSync(join(root, d.name, 'f'), 'utf8'), `in ${i}`);
    }
    for (const l of links.slice(1)) {
      const st = lstatSync(join(root, l.name));
      assert.ok(st.isSymbolicLink(), l.name);
      assert.deepEqual([st.uid, st.gid, st.mtimeMs], [l.uid, l.gid, l.mtime * 1000], l.name);
    }
    assert.equal(readFileSync(join(root, 't/d5/l/f'), 'utf8'), 'in 6');
    assert.equal(readFileSync(join(root, 't/d149/implicit/f'), 'utf8'), 'implicit parent');
    assert.equal(native.lgetxattr(join(root, 't/d149/x'), 'user.k')?.toString(), 'v');
    assert.equal(lstatSync(join(root, 't/d149/h')).ino, lstatSync(join(root, 't/d148/f')).ino);
    assert.ok(lstatSync(join(root, 'lower-file')).isDirectory());
    assert.equal(lstatSync(join(root, 'lower-file')).mode & 0o7777, 0o711);
    assert.ok(lstatSync(join(root, 'lower-dir')).isSymbolicLink());
    assert.ok(lstatSync(join(root, 't/d0/l')).isDirectory());
  });

  it('a failure among batched files names its entry and leaves nothing writing after the call', async () => {
    const root = fresh('batched-fail');
    const tar = pythonTar([
      ...Array.from({ length: 200 }, (_, i) => ({ name: `f${i}`, data: 'x' })),
      { name: 'f7/inside', data: 'f7 is a file' },
    ]);
    await assert.rejects(applyLayer(root, chunks(tar), { whiteouts: 'naive' }), (e) => isStrataError(e, 'ErrCorrupt') && /f7\/inside/.test(e.message));
    rmSync(root, { recursive: true });
    assert.ok(!existsSync(root));
  });

  it('rejects invalid whiteout names', async () => {
    for (const name of ['.wh.', 'x/.wh..', 'x/.wh...']) {
      const root = fresh(`badwh-${name.length}`);
      await assert.rejects(applyLayer(root, chunks(pythonTar([{ name }])), { whiteouts: 'naive' }), (e) => isStrataError(e, 'ErrCorrupt') && /invalid whiteout/.test(e.message));
    }
  });

  describe('breakout attempts fail and write nothing outside the root', () => {
    const cases: Array<[string, object[]]> = [
      ['file through a symlinked parent', [{ name: 'a', type: 'symlink', linkname: '../outside' }, { name: 'a/passwd', data: 'pwned' }]],
      ['file through an absolute symlink', [{ name: 'a', type: 'symlink', linkname: '/OUTSIDE_ABS' }, { name: 'a/passwd', data: 'pwned' }]],
      ['dotdot name', [{ name: '../outside/x', data: 'pwned' }]],
      ['dotdot in the middle', [{ name: 'a/../../outside/x', data: 'pwned' }]],
      ['hardlink to a host file', [{ name: 'h', type: 'hardlink', linkname: '../outside/victim' }]],
      ['hardlink via a symlink', [{ name: 's', type: 'symlink', linkname: '../outside' }, { name: 'h', type: 'hardlink', linkname: 's/victim' }]],
      ['whiteout through a symlink', [{ name: 's', type: 'symlink', linkname: '../outside' }, { name: 's/.wh.victim' }]],
      ['opaque through a symlink', [{ name: 's', type: 'symlink', linkname: '../outside' }, { name: 's/.wh..wh..opq' }]],
      ['directory through a symlink', [{ name: 's', type: 'symlink', linkname: '../outside' }, { name: 's/newdir', type: 'dir' }]],
    ];
    for (const [what, entries] of cases) {
      it(what, async () => {
        const base = fresh(`breakout-${what.replace(/\W/g, '-')}`);
        const outside = join(base, 'outside');
        mkdirSync(outside);
        writeFileSync(join(outside, 'victim'), 'safe');
        const root = join(base, 'root');
        mkdirSync(root);
        for (const format of ['naive', 'overlay'] as const) {
          await assert.rejects(applyLayer(root, chunks(pythonTar(entries)), { whiteouts: format }), (e) => isStrataError(e) && /breakout|outside the root|does not exist/.test(e.message), what);
          assert.deepEqual(readdirSync(outside), ['victim']);
          assert.equal(readFileSync(join(outside, 'victim'), 'utf8'), 'safe');
          assert.equal(lstatSync(join(outside, 'victim')).nlink, 1);
          assert.equal(existsSync('/OUTSIDE_ABS'), false);
          rmSync(root, { recursive: true });
          mkdirSync(root);
        }
      });
    }
  });

  it('rejects a hardlink to a target that is not there yet', async () => {
    const root = fresh('hl-missing');
    await assert.rejects(applyLayer(root, chunks(pythonTar([{ name: 'h', type: 'hardlink', linkname: 'later' }, { name: 'later', data: 'x' }])), { whiteouts: 'naive' }), (e) => isStrataError(e, 'ErrCorrupt'));
  });

  it('refuses an absurdly deep name with a clear error, not a crash', async () => {
    const root = fresh('deep');
    const name = Array(20000).fill('d').join('/') + '/f';
    await assert.rejects(applyLayer(root, chunks(pythonTar([{ name, data: 'x' }])), { whiteouts: 'naive' }), (e) => isStrataError(e, 'ErrCorrupt') && /too long/.test(e.message));
    assert.deepEqual(readdirSync(root), []);
  });

  it('stops at a truncated archive with ErrCorrupt', async () => {
    const root = fresh('truncated');
    const tar = pythonTar([{ name: 'f', data: 'x'.repeat(5000) }]);
    await assert.rejects(applyLayer(root, chunks(tar.subarray(0, 2048)), { whiteouts: 'naive' }), (e) => isStrataError(e, 'ErrCorrupt'));
  });
});
