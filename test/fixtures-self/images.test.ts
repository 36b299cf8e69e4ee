import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isRoot, requireCap } from '../helpers/caps.js';
import { snapshotTree } from '../fixtures/compare-tree.js';
import {
  busyboxImage, debianImage, umociUnpack, imageInfo, imageSize, ociArchive, dockerArchive, blobPath,
  BUSYBOX_PATHS, BUSYBOX_REQUIRED_APPLETS,
} from '../fixtures/images.js';
import { debianMirror } from '../fixtures/debian-rootfs.js';
import { run, runOk } from '../fixtures/run.js';

const buildScript = fileURLToPath(new URL('../fixtures/build-fixture.ts', import.meta.url));
let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'strata-images-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

test('busybox image: one layer, sh config, every special entry, and a shell that runs', async (t) => {
  if (!requireCap(t, 'root (umoci unpack keeps owners and devices)', isRoot)) return;
  const img = await busyboxImage();
  assert.equal(img.ref, 'busybox:latest');
  const info = await imageInfo(img.layout, img.ref);
  assert.equal(info.manifest.layers.length, 1);
  assert.deepEqual(info.config.config?.Cmd, ['sh']);
  assert.ok(info.config.config?.Env?.some((e) => e.startsWith('PATH=')));

  const rootfs = await umociUnpack(img.layout, img.ref, join(tmp, 'bb'));
  const s = await snapshotTree(rootfs);
  for (const a of BUSYBOX_REQUIRED_APPLETS) assert.equal(s[`/bin/${a}`]?.target, 'busybox', a);
  for (const p of Object.values(BUSYBOX_PATHS)) assert.ok(s[p], `${p} present`);
  assert.deepEqual(s[BUSYBOX_PATHS.hardlinkA].links, [BUSYBOX_PATHS.hardlinkB]);
  assert.equal(s[BUSYBOX_PATHS.charDevice].type, 'char');
  assert.equal(s[BUSYBOX_PATHS.fifo].type, 'fifo');
  assert.equal(s[BUSYBOX_PATHS.setuid].mode, 0o4755);
  assert.ok(Object.keys(s[BUSYBOX_PATHS.xattr].xattrs).some((n) => n.startsWith('user.')));
  const r = await runOk('chroot', [rootfs, '/bin/sh', '-c', 'echo hi; cat /etc/hardlink-b']);
  assert.equal(r.stdout, 'hi\none inode, two names\n');
});

test('the cache is shared by concurrent processes: one build, one directory, no leftovers', async (t) => {
  if (!requireCap(t, 'root', isRoot)) return;
  const cache = join(tmp, 'cache');
  const env = { ...process.env, STRATA_FIXTURE_CACHE: cache };
  const runs = await Promise.all([0, 1, 2].map(() => run(process.execPath, ['--import', 'tsx', buildScript, 'busybox'], { env })));
  for (const r of runs) assert.equal(r.code, 0, r.stderr);
  const outs = runs.map((r) => JSON.parse(r.stdout) as { layout: string; ref: string });
  assert.equal(new Set(outs.map((o) => o.layout)).size, 1);
  assert.ok(outs[0].layout.startsWith(cache));
  assert.deepEqual(readdirSync(cache).filter((n) => !n.endsWith('.lock')).length, 1, readdirSync(cache).join(' '));
  await runOk('umoci', ['stat', '--image', `${outs[0].layout}:${outs[0].ref}`]);
  const again = await run(process.execPath, ['--import', 'tsx', buildScript, 'busybox'], { env });
  assert.equal(again.stdout, runs[0].stdout);
});

test('oci-archive and docker-archive exports of the busybox image', async (t) => {
  if (!requireCap(t, 'root', isRoot)) return;
  const img = await busyboxImage();
  const oci = await ociArchive(img.layout, img.ref, join(tmp, 'bb-oci.tar'));
  const ociList = (await runOk('tar', ['-tf', oci])).stdout.split('\n');
  assert.ok(ociList.includes('index.json') && ociList.includes('oci-layout'), ociList.join(' '));
  const docker = await dockerArchive(img.layout, img.ref, join(tmp, 'bb-docker.tar'), 'busybox:latest');
  const manifest = JSON.parse((await runOk('tar', ['-xOf', docker, 'manifest.json'])).stdout) as Array<{ RepoTags: string[]; Layers: string[] }>;
  assert.deepEqual(manifest[0].RepoTags, ['docker.io/library/busybox:latest']);
  assert.equal(manifest[0].Layers.length, 1);
});

test('the Debian mirror comes from the host apt sources', () => {
  assert.match(debianMirror(), /^https?:\/\/\S+$/);
});

test('debian image: debootstrap minbase, a package layer, a deletion/edit layer', { timeout: 20 * 60_000 }, async (t) => {
  if (!requireCap(t, 'root (debootstrap, chroot)', isRoot)) return;
  const img = await debianImage();
  const info = await imageInfo(img.layout, img.ref);
  assert.equal(info.manifest.layers.length, 3);
  assert.deepEqual(info.config.config?.Cmd, ['bash']);
  const size = await imageSize(img.layout, img.ref);
  assert.equal(size.layers, 3);
  assert.ok(size.compressed > 20e6 && size.uncompressed > size.compressed, JSON.stringify(size));

  const top = (await runOk('tar', ['-tzf', blobPath(img.layout, info.manifest.layers[2].digest)])).stdout.split('\n');
  for (const wh of ['usr/share/.wh.doc', 'usr/share/.wh.man']) assert.ok(top.includes(wh), `${wh} in layer 3`);
  assert.ok(top.some((p) => p.startsWith('var/lib/apt/lists/.wh.')), 'apt lists whited out');

  const rootfs = await umociUnpack(img.layout, img.ref, join(tmp, 'deb'));
  assert.ok(existsSync(join(rootfs, 'usr/bin/less')));
  assert.ok(!existsSync(join(rootfs, 'usr/share/doc')));
  assert.ok(!existsSync(join(rootfs, 'usr/share/man')));
  assert.equal(readFileSync(join(rootfs, 'etc/hostname'), 'utf8'), 'strata-fixture\n');
  assert.match(readFileSync(join(rootfs, 'etc/motd'), 'utf8'), /strata test fixture/);
  assert.equal(readdirSync(join(rootfs, 'dev')).length, 0);
  const r = await runOk('/usr/sbin/chroot', [rootfs, '/bin/bash', '-c', 'dpkg -s less | grep Status'], { env: { PATH: '/usr/bin:/bin' } });
  assert.equal(r.stdout.trim(), 'Status: install ok installed');

  const base = await imageInfo(img.layout, 'debian:minbase');
  assert.deepEqual(base.manifest.layers, info.manifest.layers.slice(0, 1));
});
