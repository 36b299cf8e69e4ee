import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, constants as C } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { native } from '../../src/native/native.js';
import { copyTree } from '../../src/util/copy-tree.js';
import { isRoot, requireCap } from '../helpers/caps.js';
import { buildRichTree } from './apply-fixtures.js';
import { treeManifest } from './tree-manifest.js';

describe('copyTree', () => {
  let tmp: string;
  before(() => {
    tmp = mkdtempSync(join(tmpdir(), 'strata-copytree-'));
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('preserves types, content, modes, owners, xattrs, ns mtimes, hardlinks, devices, fifos, sockets', async (t) => {
    if (!requireCap(t, 'root', isRoot)) return;
    const src = join(tmp, 'src');
    mkdirSync(src);
    buildRichTree(src);
    // overlay layout details must survive a copy: whiteout devices and the opaque xattr
    native.mknod(join(src, 'whiteout'), C.S_IFCHR, 0, 0);
    mkdirSync(join(src, 'opaque'));
    writeFileSync(join(src, 'opaque/f'), 'f');
    native.lsetxattr(join(src, 'opaque'), 'trusted.overlay.opaque', Buffer.from('y'));
    execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', join(src, 'sock')]);
    native.lutimes(src, 1, 0, 1400000000, 5);
    const before = treeManifest(src);
    assert.ok(before.some((l) => l.startsWith('sock s ')) && before.some((l) => l.includes('trusted.overlay.opaque=79')));
    const dst = join(tmp, 'dst');
    await copyTree(src, dst);
    assert.deepEqual(treeManifest(dst), before);
    assert.deepEqual(treeManifest(src), before, 'the source is untouched');
  });

  it('copies into an existing empty directory, taking the source root metadata', async (t) => {
    if (!requireCap(t, 'root', isRoot)) return;
    const src = join(tmp, 'src2');
    mkdirSync(join(src, 'd'), { recursive: true });
    writeFileSync(join(src, 'd/f'), 'x');
    native.lutimes(src, 1, 0, 1300000000, 7);
    const dst = join(tmp, 'dst2');
    mkdirSync(dst, 0o700);
    await copyTree(src, dst);
    assert.deepEqual(treeManifest(dst), treeManifest(src));
  });
});
