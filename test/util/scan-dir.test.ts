import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { linkSync, lstatSync, mkdirSync, mkdtempSync, readlinkSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { native, SCAN_FIELDS } from '../../src/native/native.js';

test('scanDir reports what lstat, the xattr calls and readlink report, for every entry and never through a link', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'strata-scan-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'file'), 'twelve bytes');
  utimesSync(join(dir, 'file'), 1_600_000_000.25, 1_700_000_000.5);
  native.lsetxattr(join(dir, 'file'), 'user.small', Buffer.from('v'));
  native.lsetxattr(join(dir, 'file'), 'user.big', Buffer.alloc(3000, 7));
  linkSync(join(dir, 'file'), join(dir, 'hard'));
  mkdirSync(join(dir, 'sub'), 0o2750);
  symlinkSync('../../nowhere/at/all', join(dir, 'link'));
  execFileSync('mkfifo', [join(dir, 'fifo')]);

  const sc = await native.scanDir(dir);
  assert.deepEqual([...sc.names].sort(), ['fifo', 'file', 'hard', 'link', 'sub']);
  for (const [i, name] of sc.names.entries()) {
    const st = lstatSync(join(dir, name), { bigint: true });
    const f = [...sc.stats.subarray(i * SCAN_FIELDS, (i + 1) * SCAN_FIELDS)];
    const mtime = [Number(st.mtimeNs / 1_000_000_000n), Number(st.mtimeNs % 1_000_000_000n)];
    assert.deepEqual(f, [st.mode, st.uid, st.gid, st.size, st.nlink, st.rdev, ...mtime].map(Number), name);
    assert.deepEqual([sc.ids[2 * i], sc.ids[2 * i + 1]], [st.dev, st.ino], name);
    assert.equal(sc.links[i], st.isSymbolicLink() ? readlinkSync(join(dir, name)) : null, name);
    const xattrs = new Map(sc.xattrs[i] ?? []);
    const listed = native.llistxattr(join(dir, name));
    assert.deepEqual([...xattrs.keys()].sort(), listed.sort(), name);
    for (const [k, v] of xattrs) assert.deepEqual(v, native.lgetxattr(join(dir, name), k), `${name} ${k}`);
  }
  const file = sc.names.indexOf('file');
  assert.equal(new Map(sc.xattrs[file]!).get('user.big')!.length, 3000);
  assert.equal(sc.stats[file * SCAN_FIELDS + 7], 500_000_000);

  await assert.rejects(native.scanDir(join(dir, 'missing')), (e: NodeJS.ErrnoException) => e.code === 'ENOENT' && e.path === join(dir, 'missing'));
  await assert.rejects(native.scanDir(join(dir, 'file')), (e: NodeJS.ErrnoException) => e.code === 'ENOTDIR');
});
