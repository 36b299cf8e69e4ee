import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, chmod, chown, symlink, unlink, copyFile, utimes, mkdir, stat } from 'node:fs/promises';
import { constants } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native } from '../../src/native/native.js';
import { isRoot, requireCap } from '../helpers/caps.js';
import { compareTrees, snapshotTree, diffSnapshots } from '../fixtures/compare-tree.js';
import { busyboxImage, umociUnpack, BUSYBOX_PATHS, BUSYBOX_XATTR } from '../fixtures/images.js';
import { runOk } from '../fixtures/run.js';

let tmp: string;
let reference: string; // the busybox image unpacked by umoci: every kind of entry

before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'strata-compare-'));
  if (!isRoot) return;
  const img = await busyboxImage();
  reference = await umociUnpack(img.layout, img.ref, join(tmp, 'ref'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

let n = 0;
/** A fresh `cp -a` copy of the reference tree, which `mutate` then changes. */
async function copy(mutate?: (root: string) => Promise<void>): Promise<string> {
  const dest = join(tmp, `copy-${n++}`);
  await runOk('cp', ['-a', reference, dest]);
  if (mutate) await mutate(dest);
  return dest;
}

const p = (root: string, path: string) => join(root, path);

test('identical copies compare equal, including with mtimes', async (t) => {
  if (!requireCap(t, 'root (umoci unpack, device nodes)', isRoot)) return;
  const b = await copy();
  assert.deepEqual(await compareTrees(reference, b), []);
  assert.deepEqual(await compareTrees(reference, b, { mtime: true }), []);
  assert.deepEqual(await compareTrees(reference, reference), []);
});

test('the snapshot records every kind of entry of the busybox fixture', async (t) => {
  if (!requireCap(t, 'root', isRoot)) return;
  const s = await snapshotTree(reference);
  assert.equal(s[BUSYBOX_PATHS.setuid].mode, 0o4755);
  assert.equal(s[BUSYBOX_PATHS.setgidDir].mode, 0o2775);
  assert.equal(s[BUSYBOX_PATHS.tmp].mode, 0o1777);
  assert.equal(s[BUSYBOX_PATHS.xattr].xattrs[BUSYBOX_XATTR.name], BUSYBOX_XATTR.value);
  assert.deepEqual(s[BUSYBOX_PATHS.hardlinkA].links, [BUSYBOX_PATHS.hardlinkB]);
  assert.deepEqual(s[BUSYBOX_PATHS.hardlinkB].links, [BUSYBOX_PATHS.hardlinkA]);
  assert.equal(s[BUSYBOX_PATHS.symlink].target, 'passwd');
  assert.equal(s[BUSYBOX_PATHS.absSymlink].target, '/etc/passwd');
  assert.equal(s[BUSYBOX_PATHS.fifo].type, 'fifo');
  assert.deepEqual([s[BUSYBOX_PATHS.charDevice].type, s[BUSYBOX_PATHS.charDevice].major, s[BUSYBOX_PATHS.charDevice].minor], ['char', 1, 3]);
  assert.deepEqual([s[BUSYBOX_PATHS.userOwned].uid, s[BUSYBOX_PATHS.userOwned].gid, s[BUSYBOX_PATHS.userOwned].mode], [1000, 1000, 0o640]);
  assert.equal(s['/bin/sh'].target, 'busybox');
  assert.equal(s[BUSYBOX_PATHS.emptyFile].sha256, 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  // JSON round trip: the snapshot is plain data
  assert.deepEqual(diffSnapshots(JSON.parse(JSON.stringify(s)), s), []);
});

const cases: Array<[string, (root: string) => Promise<void>, RegExp]> = [
  ['mode', (r) => chmod(p(r, '/etc/passwd'), 0o600), /^\/etc\/passwd: mode 0644 != 0600$/],
  ['setuid bit', (r) => chmod(p(r, BUSYBOX_PATHS.setuid), 0o755), /setuid-file: mode 04755 != 0755$/],
  ['uid', (r) => chown(p(r, '/etc/motd'), 1, 0), /^\/etc\/motd: uid 0 != 1$/],
  ['gid', (r) => chown(p(r, '/etc/motd'), 0, 7), /^\/etc\/motd: gid 0 != 7$/],
  ['size', (r) => writeFile(p(r, '/etc/motd'), 'longer content than before\n'), /^\/etc\/motd: size \d+ != 27$/],
  ['content of the same size', async (r) => writeFile(p(r, '/etc/group'), 'x'.repeat((await stat(p(r, '/etc/group'))).size)), /^\/etc\/group: content sha256 [0-9a-f]{64} != [0-9a-f]{64}$/],
  ['symlink target', async (r) => { await unlink(p(r, '/etc/symlink')); await symlink('group', p(r, '/etc/symlink')); }, /^\/etc\/symlink: symlink target "passwd" != "group"$/],
  ['device numbers', async (r) => { await unlink(p(r, BUSYBOX_PATHS.charDevice)); native.mknod(p(r, BUSYBOX_PATHS.charDevice), constants.S_IFCHR | 0o666, 1, 5); await chmod(p(r, BUSYBOX_PATHS.charDevice), 0o666); }, /null-device: device 1:3 != 1:5$/],
  ['type', async (r) => { await unlink(p(r, BUSYBOX_PATHS.fifo)); await writeFile(p(r, BUSYBOX_PATHS.fifo), ''); }, /^\/var\/fifo: type fifo != file$/],
  ['xattr value', async (r) => native.lsetxattr(p(r, BUSYBOX_PATHS.xattr), BUSYBOX_XATTR.name, Buffer.from('other')), /xattr-file: xattr user.strata.fixture "xattr-value" != "other"$/],
  ['xattr added (trusted namespace)', async (r) => native.lsetxattr(p(r, '/etc/passwd'), 'trusted.strata', Buffer.from([0, 1, 2])), /^\/etc\/passwd: xattr trusted.strata \(none\) != "base64:AAEC"$/],
  ['xattr removed', async (r) => native.lremovexattr(p(r, BUSYBOX_PATHS.xattr), BUSYBOX_XATTR.name), /xattr-file: xattr user.strata.fixture "xattr-value" != \(none\)$/],
  ['hardlink broken', async (r) => { await unlink(p(r, BUSYBOX_PATHS.hardlinkB)); await copyFile(p(r, BUSYBOX_PATHS.hardlinkA), p(r, BUSYBOX_PATHS.hardlinkB)); }, /^\/etc\/hardlink-a: hardlinked with \["\/etc\/hardlink-b"\] != \[\]$/],
  ['missing entry', (r) => unlink(p(r, '/etc/motd')), /^\/etc\/motd: only in a \(file\)$/],
  ['extra entry', (r) => mkdir(p(r, '/newdir')), /^\/newdir: only in b \(dir\)$/],
];

for (const [what, mutate, expected] of cases) {
  test(`detects a difference in ${what}`, async (t) => {
    if (!requireCap(t, 'root', isRoot)) return;
    const b = await copy(mutate);
    const diffs = await compareTrees(reference, b);
    assert.ok(diffs.some((d) => expected.test(d)), `expected ${expected} in ${JSON.stringify(diffs)}`);
  });
}

test('a hardlink made where there was none is detected from both sides', async (t) => {
  if (!requireCap(t, 'root', isRoot)) return;
  const b = await copy(async (r) => {
    await unlink(p(r, '/etc/group'));
    await runOk('ln', [p(r, '/etc/passwd'), p(r, '/etc/group')]);
  });
  const diffs = await compareTrees(reference, b);
  assert.ok(diffs.includes('/etc/passwd: hardlinked with [] != ["/etc/group"]'), JSON.stringify(diffs));
  assert.ok(diffs.includes('/etc/group: hardlinked with [] != ["/etc/passwd"]'), JSON.stringify(diffs));
});

test('mtime is compared only when asked', async (t) => {
  if (!requireCap(t, 'root', isRoot)) return;
  const b = await copy((r) => utimes(p(r, '/etc/passwd'), 1000, 1000));
  assert.deepEqual(await compareTrees(reference, b), []);
  const diffs = await compareTrees(reference, b, { mtime: true });
  assert.deepEqual(diffs.map((d) => d.replace(/ \d+ != \d+$/, '')), ['/etc/passwd: mtime (ns)']);
});

test('ignored paths and subtrees, and the root attributes, can be left out', async (t) => {
  if (!requireCap(t, 'root', isRoot)) return;
  const b = await copy(async (r) => {
    await writeFile(p(r, '/etc/hostname'), 'x\n');
    await rm(p(r, '/home'), { recursive: true });
    await chmod(r, 0o700);
  });
  assert.deepEqual(await compareTrees(reference, b, { ignore: ['/etc/hostname', '/home', '/'] }).then((d) => d.length), 1, 'ignoring / must not ignore everything: only the root mode differs');
  assert.deepEqual(await compareTrees(reference, b, { ignore: ['/etc/hostname', '/home/'], rootAttributes: false }), []);
  const all = await compareTrees(reference, b);
  assert.ok(all.includes('/etc/hostname: only in b (file)'));
  assert.ok(all.includes('/home/user/owned-file: only in a (file)'));
  assert.ok(all.includes('/: mode 0755 != 0700'));
});
