import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createReadStream, existsSync, readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireCap, isRoot } from '../helpers/caps.js';
import { startRegistry, pushLayout, type Registry } from '../fixtures/registry.js';
import { busyboxImage, debianImage, umociUnpack, type ImageFixture } from '../fixtures/images.js';
import { runOk } from '../fixtures/run.js';
import { compareTrees } from '../fixtures/compare-tree.js';
import { openTestStore, type TestStore } from '../helpers/engine.js';
import { assertImageTree, DRIVER, isolateClientConfig, multiPlatformLayout, withEvents } from './registry-helpers.js';

const hasTools = existsSync('/usr/bin/docker-registry') && isRoot;

describe('pull and push against a real registry', () => {
  let work: string;
  let clientDir: string;
  let reg: Registry;
  let store: TestStore;
  let busybox: ImageFixture;
  let busyboxTree: string;

  before(async () => {
    if (!hasTools) return;
    clientDir = await isolateClientConfig();
    work = await mkdtemp(join(tmpdir(), 'strata-pull-'));
    reg = await startRegistry();
    busybox = await busyboxImage();
    busyboxTree = await umociUnpack(busybox.layout, busybox.ref, join(work, 'busybox-bundle'));
    await pushLayout(busybox.layout, busybox.ref, reg.url, 'library/busybox:latest');
    store = await openTestStore(DRIVER);
  });
  after(async () => {
    if (!hasTools) return;
    await store.dispose();
    await reg.stop();
    await rm(work, { recursive: true, force: true });
    await rm(clientDir, { recursive: true, force: true });
  });

  it('pulls what skopeo pushed, equal to umoci unpack, then finds it up to date and keeps its digest', async (t) => {
    if (!requireCap(t, 'docker-registry and root', hasTools)) return;
    const ref = `${reg.url}/library/busybox`;
    const { result, events } = await withEvents(store.engine, () => store.engine.pull(ref));
    const [r] = result;
    assert.equal(r!.upToDate, false);
    const statuses = events.map((e) => e.status);
    for (const s of ['Pulling fs layer', 'Downloading', 'Verifying Checksum', 'Download complete', 'Extracting', 'Pull complete']) assert.ok(statuses.includes(s), `${s} in ${statuses}`);
    assert.ok(statuses.includes(`Digest: ${r!.digest}`));
    assert.ok(statuses.includes(`Status: Downloaded newer image for ${ref}:latest`));
    await assertImageTree(store.engine, `${ref}:latest`, busyboxTree);

    const again = await withEvents(store.engine, () => store.engine.pull(ref));
    assert.equal(again.result[0]!.upToDate, true);
    assert.ok(again.events.some((e) => e.status === 'Already exists'));
    assert.ok(!again.events.some((e) => e.status === 'Downloading'));
    assert.ok(again.events.some((e) => e.status === `Status: Image is up to date for ${ref}:latest`));

    const [img] = await store.engine.images();
    assert.deepEqual(img!.RepoDigests, [`${ref}@${r!.digest}`]);
    const [inspected] = [await store.engine.inspectImage(`${ref}@${r!.digest}`)];
    assert.deepEqual(inspected.RepoTags, [`${ref}:latest`]);
    // No compressed layer blobs or ingest scratch stay behind.
    assert.equal(existsSync(join(store.root, 'content', 'ingest')) ? readdirSync(join(store.root, 'content', 'ingest')).length : 0, 0);
    assert.equal(existsSync(join(store.root, 'content', 'blobs', 'sha256')) ? readdirSync(join(store.root, 'content', 'blobs', 'sha256')).length : 0, 0);
  });

  it('pushes an image skopeo reads back identically, re-pushes and mounts across repositories without uploading', async (t) => {
    if (!requireCap(t, 'docker-registry and root', hasTools)) return;
    const src = `${reg.url}/library/busybox:latest`;
    await store.engine.tag(src, `${reg.url}/mine/bb:v1`);
    const pushed = await withEvents(store.engine, () => store.engine.push(`${reg.url}/mine/bb:v1`, { chunkSize: 256 << 10 }));
    const st = pushed.events.map((e) => e.status);
    assert.ok(st.some((s) => s.startsWith('Mounted from library/busybox')), `mounted: ${st}`);
    // A fresh layer (not known anywhere) is compressed and uploaded in chunks.
    const other = await openTestStore(DRIVER);
    try {
      await other.engine.pull(src);
      await other.engine.tag(src, `${reg.url}/fresh/bb:v1`);
      const fresh = await withEvents(other.engine, () => other.engine.push(`${reg.url}/fresh/bb:v1`, { chunkSize: 256 << 10 }));
      assert.ok(fresh.events.some((e) => e.status === 'Mounted from library/busybox'));
    } finally {
      await other.dispose();
    }
    const layout = join(work, 'pulled-back');
    await runOk('skopeo', ['--insecure-policy', 'copy', '--quiet', '--src-tls-verify=false', `docker://${reg.url}/mine/bb:v1`, `oci:${layout}:bb`]);
    const tree = await umociUnpack(layout, 'bb', join(work, 'pulled-back-bundle'));
    assert.deepEqual(await compareTrees(tree, busyboxTree), []);
    const again = await withEvents(store.engine, () => store.engine.push(`${reg.url}/mine/bb:v1`));
    assert.ok(again.events.some((e) => e.status === 'Layer already exists'));
    assert.equal(again.result.digest, pushed.result.digest);
    // Push by digest: the same manifest under its digest.
    const byDigest = await store.engine.push(`${reg.url}/mine/bb@${pushed.result.digest}`);
    assert.equal(byDigest.digest, pushed.result.digest);
  });

  it('compresses and uploads layers no registry has seen, monolithic and chunked, and skopeo reads them', async (t) => {
    if (!requireCap(t, 'docker-registry and root', hasTools)) return;
    const rootfsTar = await tarOf(busyboxTree, work);
    for (const [name, chunk] of [['mono', 64 << 20], ['chunked', 300 << 10]] as const) {
      // An imported image has no known blobs: its layer is gzip-compressed and uploaded.
      const s = await openTestStore(DRIVER);
      try {
        await s.engine.import(createReadStream(rootfsTar), { reference: `${reg.url}/imported/${name}:v1` });
        const r = await withEvents(s.engine, () => s.engine.push(`${reg.url}/imported/${name}:v1`, { chunkSize: chunk }));
        assert.ok(r.events.some((e) => e.status === 'Pushed'), `${name}: ${r.events.map((e) => e.status)}`);
        const layout = join(work, `imported-${name}`);
        await runOk('skopeo', ['--insecure-policy', 'copy', '--quiet', '--src-tls-verify=false', `docker://${reg.url}/imported/${name}:v1`, `oci:${layout}:x`]);
        assert.deepEqual(await compareTrees(await umociUnpack(layout, 'x', join(work, `imported-${name}-bundle`)), busyboxTree, { rootAttributes: false }), []);
      } finally {
        await s.dispose();
      }
    }
  });

  it('pulls a digest reference offline once it has it, and names the registry when it cannot reach it', async (t) => {
    if (!requireCap(t, 'docker-registry and root', hasTools)) return;
    const gone = await startRegistry();
    const s = await openTestStore(DRIVER);
    try {
      await pushLayout(busybox.layout, busybox.ref, gone.url, 'bb:latest');
      const [r] = await s.engine.pull(`${gone.url}/bb`);
      await gone.stop();
      const [again] = await s.engine.pull(`${gone.url}/bb@${r!.digest}`);
      assert.equal(again!.upToDate, true);
      await assert.rejects(s.engine.pull(`${gone.url}/bb:latest`), (e: Error) => {
        assert.match(e.message, new RegExp(`^pulling ${gone.url.replace(/\./g, '\\.')}/bb:latest from ${gone.url.replace(/\./g, '\\.')}: connection refused`));
        return true;
      });
    } finally {
      await gone.stop();
      await s.dispose();
    }
  });

  it('picks the right platform from a multi-platform index', async (t) => {
    if (!requireCap(t, 'docker-registry and root', hasTools)) return;
    const layout = await multiPlatformLayout(busybox, work);
    await runOk('skopeo', ['--insecure-policy', 'copy', '--quiet', '--all', '--dest-tls-verify=false', `oci:${layout}:multi`, `docker://${reg.url}/multi:latest`]);
    const s = await openTestStore(DRIVER);
    try {
      await s.engine.pull(`${reg.url}/multi`, { platform: 'linux/arm64' });
      const arm = await s.engine.inspectImage(`${reg.url}/multi`);
      assert.equal(arm.Architecture, 'arm64');
      assert.deepEqual(arm.Config.Cmd, ['arm64']);
      await s.engine.pull(`${reg.url}/multi`, { platform: 'linux/amd64' });
      const amd = await s.engine.inspectImage(`${reg.url}/multi`);
      assert.equal(amd.Architecture, 'amd64');
      assert.deepEqual(amd.Config.Cmd, ['sh']);
      await assert.rejects(s.engine.pull(`${reg.url}/multi`, { platform: 'linux/s390x' }), /no matching manifest for linux\/s390x/);
    } finally {
      await s.dispose();
    }
  });

  it('pulls the three-layer Debian image, equal to umoci unpack, sharing its base with a second image', async (t) => {
    if (!requireCap(t, 'docker-registry and root', hasTools)) return;
    const deb = await debianImage();
    await pushLayout(deb.layout, 'debian:minbase', reg.url, 'debian:minbase');
    await pushLayout(deb.layout, deb.ref, reg.url, 'debian:bookworm');
    const s = await openTestStore(DRIVER);
    try {
      await s.engine.pull(`${reg.url}/debian:minbase`);
      const { events } = await withEvents(s.engine, () => s.engine.pull(`${reg.url}/debian:bookworm`));
      assert.equal(events.filter((e) => e.status === 'Already exists').length, 1);
      assert.equal(events.filter((e) => e.status === 'Pull complete').length, 2);
      await assertImageTree(s.engine, `${reg.url}/debian:bookworm`, await umociUnpack(deb.layout, deb.ref, join(work, 'debian-bundle')));
    } finally {
      await s.dispose();
    }
  });
});

async function tarOf(dir: string, work: string): Promise<string> {
  const out = join(work, 'rootfs.tar');
  await runOk('tar', ['--numeric-owner', '--xattrs', '-C', dir, '-cf', out, '.']);
  return out;
}
