import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { selectDriver, driverFactories } from '../../src/driver/driver-registry.js';
import { ensureRemoveAll } from '../../src/driver/ensure-remove.js';
import { isStrataError } from '../../src/errors.js';
import { isRoot, requireCap } from '../helpers/caps.js';

async function withRoot(fn: (root: string) => Promise<void>): Promise<void> {
  const root = await mkdtemp(join(tmpdir(), 'strata-select-'));
  try {
    await fn(root);
  } finally {
    await ensureRemoveAll(root);
  }
}

const registryURL = new URL('../../src/driver/driver-registry.ts', import.meta.url).href;

/** selectDriver in a process running as `nobody`; returns the chosen name or the error message. */
function selectAsNobody(root: string): string {
  const script = `import { selectDriver } from ${JSON.stringify(registryURL)};
    try { console.log((await selectDriver({ root: ${JSON.stringify(root)}, options: {} })).name); } catch (e) { console.log(e.message); }`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: fileURLToPath(new URL('../..', import.meta.url)),
    encoding: 'utf8',
    uid: 65534,
    gid: 65534,
    env: { ...process.env, HOME: root },
  });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

test('an explicit driver name wins; an unknown one lists the known drivers', () =>
  withRoot(async (root) => {
    assert.equal((await selectDriver({ root, name: 'vfs', options: {} })).name, 'vfs');
    await assert.rejects(
      selectDriver({ root, name: 'aufs-nope', options: {} }),
      (e: unknown) => isStrataError(e, 'ErrInvalidArgument') && e.message.includes([...driverFactories.keys()].join(', ')),
    );
  }));

test('without a name: the first driver of the priority list that works (overlay2 as root)', (t: TestContext) =>
  withRoot(async (root) => {
    if (!requireCap(t, 'root (overlay2)', isRoot)) return;
    assert.equal((await selectDriver({ root, options: {} })).name, 'overlay2');
  }));

test('prior vfs state does not pin the driver, as in Docker', (t: TestContext) =>
  withRoot(async (root) => {
    if (!requireCap(t, 'root (overlay2)', isRoot)) return;
    await mkdir(join(root, 'vfs', 'dir', 'layer'), { recursive: true });
    assert.equal((await selectDriver({ root, options: {} })).name, 'overlay2');
  }));

test('a bad option stops selection instead of falling back to another driver', () =>
  withRoot(async (root) => {
    await assert.rejects(selectDriver({ root, options: { 'overlay2.bogus': '1' } }), (e: unknown) => isStrataError(e, 'ErrInvalidArgument'));
  }));

test('not root: overlay2 is not usable and vfs is chosen; prior overlay2 state makes that an error', (t: TestContext) =>
  withRoot(async (root) => {
    if (!requireCap(t, 'root (to start a process as nobody)', isRoot)) return;
    await chmod(root, 0o777);
    assert.equal(selectAsNobody(root), 'vfs');
    await mkdir(join(root, 'overlay2'), { mode: 0o777 });
    await writeFile(join(root, 'overlay2', 'layer'), '');
    assert.match(selectAsNobody(root), /^prior storage driver overlay2 failed: overlay2: kernel overlayfs not usable here: not running as root$/);
  }));
