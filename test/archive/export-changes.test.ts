import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { appendFileSync, chmodSync, linkSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { applyLayer } from '../../src/archive/apply-layer.js';
import { changesDirs } from '../../src/archive/changes.js';
import { exportChanges, exportFsTree, exportOverlayUpper, exportTree, hostXattrs } from '../../src/archive/export-changes.js';
import { readTar } from '../../src/archive/tar/tar-reader.js';
import { openUnion } from '../../src/union/open-union.js';
import { MNT_DETACH, native } from '../../src/native/native.js';
import { isRoot, requireCap } from '../helpers/caps.js';
import { buildRichTree, chunks, collect, run } from './apply-fixtures.js';
import { treeManifest } from './tree-manifest.js';

/** Names, types and PAX records of a tar as python's tarfile (an independent reader) sees them. */
async function pythonList(tar: Buffer): Promise<Array<{ name: string; type: string; mode: number; pax: Record<string, string> }>> {
  const script = `
import json, sys, tarfile
t = tarfile.open(fileobj=sys.stdin.buffer, mode='r|')
print(json.dumps([{'name': m.name, 'type': m.type.decode(), 'mode': m.mode, 'pax': {k: v for k, v in m.pax_headers.items() if k.startswith('SCHILY')}} for m in t]))
`;
  return JSON.parse((await run('python3', ['-c', script], tar)).toString());
}

describe('export', () => {
  let tmp: string;
  const mounts: string[] = [];
  before(() => {
    tmp = mkdtempSync(join(tmpdir(), 'strata-export-'));
  });
  after(() => {
    for (const m of mounts) {
      try {
        native.umount(m, MNT_DETACH);
      } catch {
        /* already unmounted */
      }
    }
    rmSync(tmp, { recursive: true, force: true });
  });

  it('small bodies are read in batches on a worker thread (native readFiles): exact bytes; a file that shrank, vanished or became a link fails by index', async () => {
    const dir = join(tmp, 'batched-read');
    mkdirSync(dir);
    const files = Array.from({ length: 150 }, (_, i) => ({ path: join(dir, `f${i}`), data: Buffer.from(`body ${i} `.repeat(i + 1)) }));
    for (const f of files) writeFileSync(f.path, f.data);
    const bodies = files.map((f) => Buffer.alloc(f.data.length));
    await native.readFiles(files.map((f) => f.path), bodies);
    files.forEach((f, i) => assert.ok(bodies[i]!.equals(f.data), f.path));
    // Each failure names the file by index; the ones before it were read.
    symlinkSync(files[0]!.path, join(dir, 'link'));
    for (const [path, code] of [[files[2]!.path, 'ENODATA'], [join(dir, 'missing'), 'ENOENT'], [join(dir, 'link'), 'ELOOP']] as const) {
      await assert.rejects(native.readFiles([files[1]!.path, path], [Buffer.alloc(files[1]!.data.length), Buffer.alloc(files[2]!.data.length + 1)]), (e: Error & { code?: string; index?: number }) => e.code === code && e.index === 1);
    }
  });

  it('readFiles through the io_uring reads many files per round: the first failure in path order is reported, in any round', async () => {
    const dir = join(tmp, 'ring-read');
    mkdirSync(dir);
    const files = Array.from({ length: 200 }, (_, i) => ({ path: join(dir, `f${i}`), data: Buffer.from(`ring ${i} `.repeat((i % 50) + 1)) }));
    for (const f of files) writeFileSync(f.path, f.data);
    const paths = files.map((f) => f.path);
    const fresh = () => files.map((f) => Buffer.alloc(f.data.length));
    // Reads of one round complete in any order; each lands in its own buffer.
    const bodies = fresh();
    await native.readFiles(paths, bodies);
    files.forEach((f, i) => assert.ok(bodies[i]!.equals(f.data), f.path));
    // Failures at 70 (open) and 150 (a short read, second ring of 64 onwards): 70 is the one reported.
    unlinkSync(files[70]!.path);
    writeFileSync(files[150]!.path, 'x');
    await assert.rejects(native.readFiles(paths, fresh()), (e: Error & { code?: string; index?: number }) => e.code === 'ENOENT' && e.index === 70);
    await assert.rejects(native.readFiles(paths.slice(100), fresh().slice(100)), (e: Error & { code?: string; index?: number }) => e.code === 'ENODATA' && e.index === 50);
  });

  it('readFiles reads file by file where the kernel refuses io_uring (sysctl kernel.io_uring_disabled=2)', async (t) => {
    if (!requireCap(t, 'root', isRoot)) return;
    const sysctl = '/proc/sys/kernel/io_uring_disabled';
    const dir = join(tmp, 'ringless-read');
    mkdirSync(dir);
    for (let i = 0; i < 100; i++) writeFileSync(join(dir, `f${i}`), `plain ${i}`.repeat(i + 1));
    const child = `
      import { native } from ${JSON.stringify(new URL('../../src/native/native.ts', import.meta.url).href)};
      const paths = Array.from({ length: 100 }, (_, i) => ${JSON.stringify(dir)} + '/f' + i);
      const bodies = paths.map((_, i) => Buffer.alloc(('plain ' + i).length * (i + 1)));
      await native.readFiles(paths, bodies);
      const ok = bodies.every((b, i) => b.toString() === ('plain ' + i).repeat(i + 1));
      const err = await native.readFiles([paths[0], paths[1] + '.missing'], [bodies[0], bodies[1]]).catch((e) => e);
      console.log(JSON.stringify({ ok, code: err.code, index: err.index }));
    `;
    const before = execFileSync('cat', [sysctl]).toString().trim();
    writeFileSync(sysctl, '2');
    try {
      const out = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', child]).toString();
      assert.deepEqual(JSON.parse(out), { ok: true, code: 'ENOENT', index: 1 });
    } finally {
      writeFileSync(sysctl, before);
    }
  });

  it('exportTree is read back by GNU tar as the same tree, and is deterministic', async (t) => {
    if (!requireCap(t, 'root', isRoot)) return;
    const src = join(tmp, 'tree-src');
    mkdirSync(src);
    buildRichTree(src);
    const tar = await collect(exportTree(src));
    assert.equal(createHash('sha256').update(await collect(exportTree(src))).digest('hex'), createHash('sha256').update(tar).digest('hex'));
    const out = join(tmp, 'tree-gnu');
    mkdirSync(out);
    await run('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', '-', '-C', out], tar);
    assert.deepEqual(treeManifest(out).slice(1), treeManifest(src, { mtimeSeconds: true }).map((l) => l.replace(/ mtime=(\d+)s/, ' mtime=$1000000000')).slice(1));
    const names = (await pythonList(tar)).map((m) => m.name);
    assert.ok(names.includes('passwd-link') && !names.includes('.') && !names.includes(''));
  });

  it('exportChanges applied onto a copy of the parent reproduces the layer', async (t) => {
    if (!requireCap(t, 'root', isRoot)) return;
    const parent = join(tmp, 'parent');
    mkdirSync(parent);
    buildRichTree(parent);
    const layer = join(tmp, 'layer');
    execFileSync('cp', ['-a', parent, layer]);
    appendFileSync(join(layer, 'etc/passwd'), 'u:x:1:1\n'); // modifies a file with two other links outside the set
    writeFileSync(join(layer, 'home/user/new'), 'new');
    linkSync(join(layer, 'home/user/new'), join(layer, 'new-link')); // a hardlink inside the set
    mkdirSync(join(layer, 'srv/data/deep'), { recursive: true });
    writeFileSync(join(layer, 'srv/data/deep/f'), 'f');
    native.lsetxattr(join(layer, 'srv/data/deep/f'), 'user.x', Buffer.from('1'));
    chmodSync(join(layer, 'suid'), 0o755);
    unlinkSync(join(layer, 'dangling'));
    rmSync(join(layer, 'home/user/big.bin'));
    rmSync(join(layer, 'a'.repeat(120)), { recursive: true });
    symlinkSync('/etc/passwd', join(layer, 'tmp/link'));
    const changes = await changesDirs(layer, parent);
    const tar = await collect(exportChanges(layer, changes));
    assert.ok(tar.equals(await collect(exportChanges(layer, [...changes].reverse()))), 'same changes in any order give the same bytes');
    const listed = await pythonList(tar);
    const names = listed.map((m) => m.name);
    assert.ok(names.includes('.wh.dangling') && names.includes('home/user/.wh.big.bin') && names.includes(`.wh.${'a'.repeat(120)}`));
    assert.equal(listed.find((m) => m.name === 'new-link')?.type, '1', 'new-link is a hardlink entry');
    const target = join(tmp, 'target');
    execFileSync('cp', ['-a', parent, target]);
    await applyLayer(target, chunks(tar, 65536), { whiteouts: 'naive' });
    // the root directory is no entry of a layer, so its mtime is the parent's
    assert.deepEqual(treeManifest(target, { mtimeSeconds: true }).slice(1), treeManifest(layer, { mtimeSeconds: true }).slice(1));
  });

  it('exportOverlayUpper turns a kernel overlay upper dir into whiteouts and opaque entries', async (t) => {
    if (!requireCap(t, 'root', isRoot)) return;
    const base = join(tmp, 'ovl');
    const [lower, upper, work, merged] = ['lower', 'upper', 'work', 'merged'].map((d) => join(base, d));
    for (const d of [lower, upper, work, merged]) mkdirSync(d, { recursive: true });
    mkdirSync(join(lower, 'lib/old-sub'), { recursive: true });
    writeFileSync(join(lower, 'lib/old'), 'old');
    writeFileSync(join(lower, 'lib/old-sub/x'), 'x');
    mkdirSync(join(lower, 'gone-dir'));
    writeFileSync(join(lower, 'gone-dir/f'), 'f');
    writeFileSync(join(lower, 'gone-file'), 'g');
    writeFileSync(join(lower, 'edited'), 'e');
    native.mount('overlay', merged, 'overlay', 0, `lowerdir=${lower},upperdir=${upper},workdir=${work}`);
    mounts.push(merged);
    let view: string[];
    try {
      rmSync(join(merged, 'gone-dir'), { recursive: true });
      unlinkSync(join(merged, 'gone-file'));
      appendFileSync(join(merged, 'edited'), 'more');
      rmSync(join(merged, 'lib'), { recursive: true });
      mkdirSync(join(merged, 'lib'));
      writeFileSync(join(merged, 'lib/new'), 'n');
      view = treeManifest(merged, { mtimeSeconds: true }).slice(1);
    } finally {
      native.umount(merged, 0);
      mounts.pop();
    }
    assert.equal(native.lgetxattr(join(upper, 'lib'), 'trusted.overlay.opaque')?.toString(), 'y', 'the kernel made lib opaque');
    const tar = await collect(exportOverlayUpper(upper));
    const listed = await pythonList(tar);
    assert.deepEqual(
      listed.map((m) => `${m.type} ${m.name}`),
      ['0 edited', '0 .wh.gone-dir', '0 .wh.gone-file', '5 lib', '0 lib/.wh..wh..opq', '0 lib/new'],
    );
    assert.ok(listed.every((m) => Object.keys(m.pax).every((k) => !k.includes('trusted.overlay'))), 'no overlay xattrs exported');
    // The exported diff applied the naive way onto the lower tree gives what the mount showed.
    const target = join(base, 'target');
    execFileSync('cp', ['-a', lower, target]);
    await applyLayer(target, chunks(tar), { whiteouts: 'naive' });
    assert.deepEqual(treeManifest(target, { mtimeSeconds: true }).slice(1), view);
  });
  it('exportFsTree over a one-branch union gives exportTree\'s bytes; over several, the merged view without whiteouts', async (t) => {
    if (!requireCap(t, 'root', isRoot)) return;
    const src = join(tmp, 'fs-src');
    mkdirSync(src);
    buildRichTree(src);
    const one = await openUnion([{ path: src, mode: 'ro' }]);
    // The rich tree has no symlinked directories, so union paths are host paths below src.
    const viaFs = await collect(exportFsTree(one, async (p) => hostXattrs(src + p)));
    assert.ok(viaFs.equals(await collect(exportTree(src))));

    const lower = join(tmp, 'fs-lower');
    const upper = join(tmp, 'fs-upper');
    mkdirSync(join(lower, 'd'), { recursive: true });
    mkdirSync(join(upper, 'd'), { recursive: true });
    writeFileSync(join(lower, 'a'), 'lower a');
    writeFileSync(join(lower, 'gone'), 'hidden');
    writeFileSync(join(lower, 'd/x'), 'x');
    writeFileSync(join(upper, 'a'), 'upper a');
    writeFileSync(join(upper, '.wh.gone'), '');
    writeFileSync(join(upper, 'd/y'), 'y');
    const union = await openUnion([{ path: upper, mode: 'rw' }, { path: lower, mode: 'ro' }]);
    const seen: string[] = [];
    for await (const e of readTar(exportFsTree(union))) seen.push(`${e.header.name}=${e.header.type === 'file' ? (await collect(e.body())).toString() : e.header.type}`);
    assert.deepEqual(seen, ['a=upper a', 'd/=directory', 'd/x=x', 'd/y=y']);
    // A subtree, named as asked, with a name skipped.
    const sub: string[] = [];
    for await (const e of readTar(exportFsTree(union, undefined, { path: '/d', as: 'top', skip: new Set(['/top/x']) }))) sub.push(e.header.name);
    assert.deepEqual(sub, ['top/', 'top/y']);
  });
});
