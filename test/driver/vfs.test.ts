import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { VfsDriver, vfs } from '../../src/driver/vfs/vfs.js';
import { isStrataError } from '../../src/errors.js';
import { driverSuite } from './driver-suite.js';

driverSuite('vfs', (root) => vfs.init({ root, options: {} }), { mounts: false });

test('vfs: layout is <root>/vfs/dir/<id>, each layer a full copy; no status, no metadata', async () => {
  const root = await mkdtemp(join(tmpdir(), 'strata-vfs-'));
  try {
    const d = await VfsDriver.init({ root, options: {} });
    await d.create('a', null);
    await d.create('b', 'a');
    assert.deepEqual((await readdir(join(root, 'vfs', 'dir'))).sort(), ['a', 'b']);
    assert.equal(await d.get('b'), join(root, 'vfs', 'dir', 'b'));
    assert.equal((await stat(join(root, 'vfs', 'dir'))).mode & 0o777, 0o700);
    assert.deepEqual(await d.status(), []);
    assert.deepEqual(await d.metadata('a'), {});
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});

test('vfs: size and unknown options are refused clearly', async () => {
  const root = await mkdtemp(join(tmpdir(), 'strata-vfs-'));
  try {
    for (const [key, pattern] of [['size', /vfs: size is not supported/], ['overlay2.size', /vfs: unknown option overlay2.size/]] as const) {
      await assert.rejects(vfs.init({ root, options: { [key]: '10G' } }), (e: unknown) => isStrataError(e, 'ErrInvalidArgument') && pattern.test(e.message));
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
});
