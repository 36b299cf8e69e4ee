import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { isRoot, requireCap } from '../helpers/caps.js';
import { startDockerd, loadIntoDocker } from '../fixtures/dockerd.js';
import { busyboxImage, dockerArchive, imageInfo } from '../fixtures/images.js';
import { mountsUnder } from '../fixtures/unmount.js';

test('a private dockerd loads, inspects, runs and saves the busybox fixture, and stop() leaves nothing', async (t) => {
  if (!requireCap(t, 'root and /usr/sbin/dockerd', isRoot && existsSync('/usr/sbin/dockerd'))) return;
  const tmp = await mkdtemp(join(tmpdir(), 'strata-dockerd-test-'));
  const d = await startDockerd();
  const root = dirname(d.execRoot);
  const pids = [Number(readFileSync(join(root, 'dockerd.pid'), 'utf8')), Number(readFileSync(join(d.execRoot, 'containerd/containerd.pid'), 'utf8'))];
  try {
    assert.match(d.host, /^unix:\/\//);
    const img = await busyboxImage();
    const archive = await dockerArchive(img.layout, img.ref, join(tmp, 'busybox.tar'), 'busybox:latest');
    assert.deepEqual(await loadIntoDocker(d, archive), ['busybox:latest']);

    const inspect = await d.docker(['image', 'inspect', 'busybox:latest']);
    assert.equal(inspect.code, 0, inspect.stderr);
    const [info] = JSON.parse(inspect.stdout) as Array<{ Config: { Cmd: string[] }; RootFS: { Layers: string[] }; GraphDriver: { Name: string } }>;
    assert.deepEqual(info.Config.Cmd, ['sh']);
    assert.deepEqual(info.RootFS.Layers, (await imageInfo(img.layout, img.ref)).config.rootfs.diff_ids);
    assert.equal(info.GraphDriver.Name, 'overlay2');

    const created = await d.docker(['create', '--network', 'none', 'busybox:latest', 'true']);
    assert.equal(created.code, 0, created.stderr);
    const ran = await d.docker(['run', '--rm', '--network', 'none', 'busybox:latest', 'sh', '-c', 'cat /etc/hardlink-b; ls -ln /home/user/owned-file']);
    assert.equal(ran.code, 0, ran.stderr);
    assert.match(ran.stdout, /one inode, two names\n-rw-r-----\s+1 1000\s+1000\s/);

    const saved = join(tmp, 'saved.tar');
    const save = await d.docker(['save', '-o', saved, 'busybox:latest']);
    assert.equal(save.code, 0, save.stderr);
    assert.ok(statSync(saved).size > 1_000_000, 'docker save wrote the busybox layer');
  } finally {
    await d.stop();
    await rm(tmp, { recursive: true, force: true });
  }
  assert.equal(existsSync(root), false, 'temp dirs removed');
  assert.deepEqual(mountsUnder(root), []);
  const after = await d.docker(['version'], { timeoutMs: 10_000 });
  assert.notEqual(after.code, 0, 'the daemon is gone');
  for (const pid of pids) assert.throws(() => process.kill(pid, 0), /ESRCH/, `process ${pid} is gone`);
  await d.stop(); // idempotent
});

test('a dockerd that cannot start fails with its log', async (t) => {
  if (!requireCap(t, 'root and /usr/sbin/dockerd', isRoot && existsSync('/usr/sbin/dockerd'))) return;
  await assert.rejects(startDockerd({ storageDriver: 'no-such-driver', readyTimeoutMs: 20_000 }), /dockerd exited with 1.*\n(.|\n)*no-such-driver/);
});
