import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { appendFileSync, chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, unlinkSync, writeFileSync, constants as C } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { changesDirs, changesOverlay, type Change } from '../../src/archive/changes.js';
import { MNT_DETACH, native } from '../../src/native/native.js';
import { isRoot, requireCap } from '../helpers/caps.js';
import { CAP_NET_BIND } from './apply-fixtures.js';

const fmt = (cs: Change[]) => cs.map((c) => `${c.kind} ${c.path}`);

/** A small image-like tree with stable times. */
function buildBase(root: string): void {
  for (const d of ['etc', 'usr/bin', 'var/cache/apt', 'opt', 'a/b/c', 'lib2/sub']) mkdirSync(join(root, d), { recursive: true });
  const files: Record<string, string> = {
    'etc/passwd': 'root:x:0:0\n',
    'etc/hosts': '127.0.0.1 localhost\n',
    'usr/bin/tool': 'binary',
    'usr/bin/del': 'bye',
    'var/cache/apt/pkg': 'cache',
    'opt/readme': 'r',
    'a/b/c/file': 'deep',
    'lib2/old': 'o',
    'lib2/sub/old2': 'o',
    'chmodme': 'm',
    'chownme': 'o',
    'touchme': 't',
    'capme': 'c',
  };
  for (const [p, data] of Object.entries(files)) writeFileSync(join(root, p), data);
  execFileSync('touch', ['-h', '-d', '2020-01-01T00:00:00.123456789Z', ...Object.keys(files).map((p) => join(root, p))]);
}

/** The same edits, applied through a path (a copy of the tree, or an overlay mount of it). */
function edit(root: string): void {
  writeFileSync(join(root, 'new-file'), 'n');
  mkdirSync(join(root, 'newdir/sub'), { recursive: true });
  writeFileSync(join(root, 'newdir/sub/f'), 'f');
  appendFileSync(join(root, 'etc/passwd'), 'user:x:1000:1000\n');
  chmodSync(join(root, 'chmodme'), 0o600);
  chownSync(join(root, 'chownme'), 1000, 1000);
  execFileSync('touch', ['-d', '2021-01-01', join(root, 'touchme')]);
  native.lsetxattr(join(root, 'capme'), 'security.capability', CAP_NET_BIND);
  unlinkSync(join(root, 'usr/bin/del'));
  rmSync(join(root, 'var/cache'), { recursive: true });
  execFileSync('touch', [join(root, 'opt')]); // a directory's mtime alone is no change
  writeFileSync(join(root, 'a/b/c/file'), 'DEEP');
  rmSync(join(root, 'lib2'), { recursive: true });
  mkdirSync(join(root, 'lib2'));
  writeFileSync(join(root, 'lib2/new'), 'n');
}

const expected = [
  'C /a',
  'C /a/b',
  'C /a/b/c',
  'C /a/b/c/file',
  'C /capme',
  'C /chmodme',
  'C /chownme',
  'C /etc',
  'C /etc/passwd',
  'C /lib2',
  'A /lib2/new',
  'D /lib2/old',
  'D /lib2/sub',
  'A /new-file',
  'A /newdir',
  'A /newdir/sub',
  'A /newdir/sub/f',
  'C /touchme',
  'C /usr',
  'C /usr/bin',
  'D /usr/bin/del',
  'C /var',
  'D /var/cache',
];

describe('changes', () => {
  let tmp: string;
  const mounts: string[] = [];
  before(() => {
    tmp = mkdtempSync(join(tmpdir(), 'strata-changes-'));
  });
  after(() => {
    for (const m of mounts.reverse()) {
      try {
        native.umount(m, MNT_DETACH);
      } catch {
        /* already unmounted */
      }
    }
    rmSync(tmp, { recursive: true, force: true });
  });
  const mountOverlay = (target: string, data: string) => {
    mkdirSync(target, { recursive: true });
    native.mount('overlay', target, 'overlay', 0, data);
    mounts.push(target);
  };
  const unmount = (target: string) => {
    native.umount(target, 0);
    mounts.splice(mounts.indexOf(target), 1);
  };

  it('changesDirs follows docker diff rules on constructed trees', async (t) => {
    if (!requireCap(t, 'root', isRoot)) return;
    const parent = join(tmp, 'naive-parent');
    const layer = join(tmp, 'naive-layer');
    mkdirSync(parent);
    buildBase(parent);
    execFileSync('cp', ['-a', parent, layer]);
    assert.deepEqual(await changesDirs(layer, parent), []);
    edit(layer);
    assert.deepEqual(fmt(await changesDirs(layer, parent)), expected);
  });

  it('changesDirs against no parent reports everything added', async () => {
    const layer = join(tmp, 'naive-base');
    mkdirSync(join(layer, 'd/e'), { recursive: true });
    writeFileSync(join(layer, 'd/e/f'), 'x');
    writeFileSync(join(layer, 'top'), 'x');
    assert.deepEqual(fmt(await changesDirs(layer, null)), ['A /d', 'A /d/e', 'A /d/e/f', 'A /top']);
  });

  it('changesDirs: a directory replaced by a file deletes its children; a file replaced by a directory adds them', async () => {
    const parent = join(tmp, 'swap-parent');
    const layer = join(tmp, 'swap-layer');
    mkdirSync(join(parent, 'dir'), { recursive: true });
    writeFileSync(join(parent, 'dir/child'), 'x');
    writeFileSync(join(parent, 'file'), 'x');
    mkdirSync(join(layer, 'file'), { recursive: true });
    writeFileSync(join(layer, 'file/inner'), 'x');
    writeFileSync(join(layer, 'dir'), 'x');
    assert.deepEqual(fmt(await changesDirs(layer, parent)), ['C /dir', 'D /dir/child', 'C /file', 'A /file/inner']);
  });

  it('changesOverlay on a kernel overlay upper dir agrees with changesDirs on the merged view', async (t) => {
    if (!requireCap(t, 'root', isRoot)) return;
    const base = join(tmp, 'ovl');
    const lower = join(base, 'lower');
    mkdirSync(lower, { recursive: true });
    buildBase(lower);
    for (const d of ['upper', 'work']) mkdirSync(join(base, d));
    const merged = join(base, 'merged');
    mountOverlay(merged, `lowerdir=${lower},upperdir=${base}/upper,workdir=${base}/work`);
    edit(merged);
    const viaDirs = fmt(await changesDirs(merged, lower));
    unmount(merged);
    assert.deepEqual(viaDirs, expected);
    assert.deepEqual(fmt(await changesOverlay(join(base, 'upper'), lower)), expected);
    assert.deepEqual(fmt(await changesOverlay(join(base, 'upper'), [lower])), expected);
  });

  it('changesOverlay sees through a stack of lower layers with their own whiteouts and opaque dirs', async (t) => {
    if (!requireCap(t, 'root', isRoot)) return;
    const base = join(tmp, 'stack');
    const [l1, l2, up, work] = ['l1', 'l2', 'upper', 'work'].map((d) => join(base, d));
    for (const d of [l1, l2, up, work]) mkdirSync(d, { recursive: true });
    // l2 (bottom): x, d/{p,q}, keep; l1 (top lower): whiteout of x, d opaque with d/r
    writeFileSync(join(l2, 'x'), 'x');
    mkdirSync(join(l2, 'd'));
    writeFileSync(join(l2, 'd/p'), 'p');
    writeFileSync(join(l2, 'd/q'), 'q');
    writeFileSync(join(l2, 'keep'), 'k');
    native.mknod(join(l1, 'x'), C.S_IFCHR, 0, 0);
    mkdirSync(join(l1, 'd'));
    native.lsetxattr(join(l1, 'd'), 'trusted.overlay.opaque', Buffer.from('y'));
    writeFileSync(join(l1, 'd/r'), 'r');
    const parentView = join(base, 'parent-view');
    mountOverlay(parentView, `lowerdir=${l1}:${l2}`);
    const merged = join(base, 'merged');
    mountOverlay(merged, `lowerdir=${l1}:${l2},upperdir=${up},workdir=${work}`);
    writeFileSync(join(merged, 'x'), 'back'); // x was deleted by l1: adding it again is A
    writeFileSync(join(merged, 'd/p'), 'p again'); // p is hidden by l1's opaque d: A
    unlinkSync(join(merged, 'd/r'));
    unlinkSync(join(merged, 'keep'));
    const viaDirs = fmt(await changesDirs(merged, parentView));
    unmount(merged);
    const want = ['C /d', 'A /d/p', 'D /d/r', 'D /keep', 'A /x'];
    assert.deepEqual(viaDirs, want);
    assert.deepEqual(fmt(await changesOverlay(up, [l1, l2])), want);
    assert.deepEqual(fmt(await changesOverlay(up, parentView)), want);
    unmount(parentView);
  });
});
