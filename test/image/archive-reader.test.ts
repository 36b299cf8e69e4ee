import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readFile, writeFile, truncate, stat } from 'node:fs/promises';
import { createReadStream, createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { readImageArchive, type ArchiveContents } from '../../src/image/archive-reader.js';
import { writeImageArchive } from '../../src/image/archive-writer.js';
import { LocalContentStore } from '../../src/content/local-content-store.js';
import type { ContentStore } from '../../src/content/content-store.js';
import { isStrataError, type ErrorCode } from '../../src/errors.js';
import { sha256, type Digest } from '../../src/util/digest.js';
import { buildLayer, configFor, pythonTar, run, saveImage, type BuiltLayer } from './archive-fixtures.js';

let dir: string;
let layout: string;
/** The umoci-built image: its manifest, config and (gzip) layer digests as umoci wrote them. */
let umociImage: { manifest: Digest; config: Digest; layers: Digest[]; diffIDs: Digest[] };
let storeCount = 0;
let good: string;
let goodLayer: BuiltLayer;

const newStore = () => new LocalContentStore(join(dir, `store-${storeCount++}`));

async function blobs(store: ContentStore): Promise<Digest[]> {
  const out: Digest[] = [];
  for await (const b of store.list()) out.push(b.digest);
  return out.sort();
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'strata-archive-reader-'));
  layout = join(dir, 'umoci-layout');
  run('umoci', ['init', '--layout', layout]);
  run('umoci', ['new', '--image', `${layout}:t`]);
  const bundle = join(dir, 'umoci-bundle');
  run('umoci', ['unpack', '--image', `${layout}:t`, bundle]);
  await writeFile(join(bundle, 'rootfs', 'hello.txt'), 'hello from umoci\n');
  run('umoci', ['repack', '--image', `${layout}:t`, bundle]);
  // A bundle repacks against the image it was unpacked from: unpack again for a second layer.
  const bundle2 = join(dir, 'umoci-bundle2');
  run('umoci', ['unpack', '--image', `${layout}:t`, bundle2]);
  await writeFile(join(bundle2, 'rootfs', 'second.txt'), 'second layer\n');
  run('umoci', ['repack', '--image', `${layout}:t`, bundle2]);
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ digest: Digest }> };
  const manifest = index.manifests[0]!.digest;
  const m = JSON.parse(await readFile(join(layout, 'blobs', 'sha256', manifest.slice(7)), 'utf8')) as { config: { digest: Digest }; layers: Array<{ digest: Digest }> };
  const config = JSON.parse(await readFile(join(layout, 'blobs', 'sha256', m.config.digest.slice(7)), 'utf8')) as { rootfs: { diff_ids: Digest[] } };
  umociImage = { manifest, config: m.config.digest, layers: m.layers.map((l) => l.digest), diffIDs: config.rootfs.diff_ids };
  assert.equal(umociImage.layers.length, 2);
  goodLayer = await buildLayer(dir, 'good', { 'f': 'content\n'.repeat(5000) });
  good = join(dir, 'good-archive.tar');
  await pipeline(writeImageArchive([saveImage(['good:1'], [goodLayer])], 'docker'), createWriteStream(good));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function checkUmociImage(got: ArchiveContents, store: ContentStore, expectCompressed: boolean): Promise<void> {
  assert.equal(got.images.length, 1);
  const img = got.images[0]!;
  assert.equal(img.config.digest, umociImage.config);
  assert.deepEqual(img.config.parsed.rootfs.diff_ids, umociImage.diffIDs);
  const layerDigests = img.layers.map((l) => l.digest);
  assert.deepEqual(layerDigests, expectCompressed ? umociImage.layers : umociImage.diffIDs);
  for (const l of img.layers) {
    assert.equal(l.mediaType, expectCompressed ? 'application/vnd.oci.image.layer.v1.tar+gzip' : 'application/vnd.docker.image.rootfs.diff.tar');
    assert.deepEqual(await store.info(l.digest), { digest: l.digest, size: l.size });
  }
  // The second layer holds second.txt: read it back from the store.
  const data = await store.readBytes(img.layers[1]!.digest, 1 << 20);
  assert.ok((expectCompressed ? gunzipSync(data) : data).includes(Buffer.from('second layer\n')));
  for (const d of got.blobsIngested) assert.ok(await store.info(d), `${d} ingested and present`);
}

test('docker-archive written by skopeo (legacy layout with symlinked layer.tar)', async () => {
  const archive = join(dir, 'skopeo-docker.tar');
  run('skopeo', ['copy', `oci:${layout}:t`, `docker-archive:${archive}:foo/bar:baz`]);
  const store = newStore();
  const got = await readImageArchive(createReadStream(archive), store);
  await checkUmociImage(got, store, false);
  assert.deepEqual(got.images[0]!.repoTags, ['foo/bar:baz']);
  assert.equal(got.images[0]!.manifest, undefined);
  assert.deepEqual(got.blobsIngested.sort(), [...umociImage.diffIDs].sort(), 'layer files only: JSON metadata stays in memory');
});

test('oci-archive written by skopeo, also gzip-compressed as a whole', async () => {
  const archive = join(dir, 'skopeo-oci.tar');
  run('skopeo', ['copy', `oci:${layout}:t`, `oci-archive:${archive}:t2`]);
  const store = newStore();
  const got = await readImageArchive(createReadStream(archive), store);
  await checkUmociImage(got, store, true);
  assert.deepEqual(got.images[0]!.repoTags, []);
  assert.deepEqual(got.images[0]!.refNames, ['t2']);
  assert.equal(got.images[0]!.manifest?.digest, umociImage.manifest);
  assert.equal(got.blobsIngested.length, 4);
  const gz = join(dir, 'skopeo-oci.tar.gz');
  await writeFile(gz, gzipSync(await readFile(archive)));
  const store2 = newStore();
  await checkUmociImage(await readImageArchive(createReadStream(gz), store2), store2, true);
});

test('OCI layout directory made by umoci; blobs already in the store are not reported as ingested', async () => {
  const store = newStore();
  const got = await readImageArchive({ dir: layout }, store);
  await checkUmociImage(got, store, true);
  assert.equal(got.blobsIngested.length, 4, 'manifest, config, two layers');
  const again = await readImageArchive({ dir: layout }, store);
  assert.deepEqual(again.blobsIngested, []);
});

test('nested index: the entry for this platform is chosen', async () => {
  const layer = await buildLayer(dir, 'nested', { 'x': 'x' });
  const other = await buildLayer(dir, 'nested-arm', { 'y': 'y' });
  const cfg = configFor([layer]);
  const cfgArm = configFor([other], { architecture: 'arm64' });
  const manifest = (c: Buffer, l: BuiltLayer) =>
    Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(c), size: c.length }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: l.diffID, size: l.size }] }));
  const m1 = manifest(cfg, layer);
  const m2 = manifest(cfgArm, other);
  const arch = process.arch === 'arm64' ? 'arm64' : 'amd64';
  const inner = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [
    { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(m2), size: m2.length, platform: { os: 'linux', architecture: arch === 'amd64' ? 'arm64' : 'amd64' } },
    { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(m1), size: m1.length, platform: { os: 'linux', architecture: arch } },
  ] }));
  const outer = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', digest: sha256(inner), size: inner.length, annotations: { 'io.containerd.image.name': 'example.com/multi:v1', 'org.opencontainers.image.ref.name': 'v1' } }] }));
  const blob = (b: Buffer) => ({ name: `blobs/sha256/${sha256(b).slice(7)}`, data: b });
  const archive = join(dir, 'nested.tar');
  pythonTar(archive, [
    { name: 'oci-layout', data: Buffer.from('{"imageLayoutVersion":"1.0.0"}') },
    blob(inner), blob(m1), blob(m2), blob(cfg), blob(cfgArm),
    { name: `blobs/sha256/${layer.diffID.slice(7)}`, data: await readFile(layer.path) },
    { name: `./blobs/sha256/${other.diffID.slice(7)}`, data: await readFile(other.path) },
    { name: 'index.json', data: outer },
  ]);
  const got = await readImageArchive(createReadStream(archive), newStore());
  assert.equal(got.images.length, 1);
  assert.deepEqual(got.images[0]!.repoTags, ['example.com/multi:v1']);
  assert.deepEqual(got.images[0]!.refNames, ['v1']);
  assert.equal(got.images[0]!.config.digest, sha256(cfg), 'the config of the entry for this platform');
  assert.deepEqual(got.images[0]!.layers.map((l) => l.digest), [layer.diffID]);
});

// ---- bad input: a clear error, and the store keeps no blob this call added ----

const fails = (code: ErrorCode, re: RegExp) => (e: unknown) => {
  assert.ok(isStrataError(e, code), `want ${code}, got ${String(e)}`);
  assert.match(e.message, re);
  assert.ok(!e.message.includes('\n'));
  return true;
};

async function rejectsLeavingStoreAsItWas(input: string | { dir: string }, check: (e: unknown) => boolean): Promise<void> {
  const store = newStore();
  const pre = await store.ingest('pre-existing', [Buffer.from('already here')]);
  await assert.rejects(readImageArchive(typeof input === 'string' ? createReadStream(input) : input, store), check);
  assert.deepEqual(await blobs(store), [pre.digest], 'only the blob that was there before');
}


test('truncated archive', async () => {
  const cut = join(dir, 'truncated.tar');
  await writeFile(cut, await readFile(good));
  await truncate(cut, 512 * 3 + 1000); // inside the first blob
  await rejectsLeavingStoreAsItWas(cut, fails('ErrCorrupt', /truncated/));
  const gz = join(dir, 'truncated.tar.gz');
  const z = gzipSync(await readFile(good));
  await writeFile(gz, z.subarray(0, z.length - 100));
  await rejectsLeavingStoreAsItWas(gz, fails('ErrCorrupt', /gzip|truncated/));
});

test('a blob whose bytes do not match its name', async () => {
  const bad = join(dir, 'mismatch.tar');
  pythonTar(bad, [{ name: `blobs/sha256/${sha256('other').slice(7)}`, data: Buffer.from('not other') }, { name: 'index.json', data: Buffer.from('{}') }]);
  await rejectsLeavingStoreAsItWas(bad, fails('ErrCorrupt', /blobs\/sha256\/[a-f0-9]{64} does not match its name.*expected digest sha256:[a-f0-9]{64}, got sha256:/));
});

test('not an image archive: no manifest.json or index.json', async () => {
  const bad = join(dir, 'no-manifest.tar');
  pythonTar(bad, [{ name: 'layer.tar', data: await readFile(goodLayer.path) }]);
  await rejectsLeavingStoreAsItWas(bad, fails('ErrInvalidArgument', /^not an image archive/));
});

test('too-large manifest.json', async () => {
  const bad = join(dir, 'big-manifest.tar');
  pythonTar(bad, [{ name: 'manifest.json', data: Buffer.alloc(9 << 20, 0x20) }]);
  await rejectsLeavingStoreAsItWas(bad, fails('ErrLimit', /manifest\.json is 9437184 bytes/));
});

test('missing layer blob, layer count mismatch, bad tags, unsafe paths, unsupported media types', async () => {
  const layerData = await readFile(goodLayer.path);
  const cfg = configFor([goodLayer]);
  const cfg2 = configFor([goodLayer, goodLayer]);
  const mj = (v: unknown) => ({ name: 'manifest.json', data: Buffer.from(JSON.stringify(v)) });
  const cases: Array<[string, Parameters<typeof pythonTar>[1], (e: unknown) => boolean]> = [
    ['missing-blob', [{ name: 'c.json', data: cfg }, mj([{ Config: 'c.json', RepoTags: ['x:1'], Layers: ['l/layer.tar'] }])], fails('ErrCorrupt', /l\/layer\.tar is missing/)],
    ['count', [{ name: 'c.json', data: cfg2 }, { name: 'l/layer.tar', data: layerData }, mj([{ Config: 'c.json', RepoTags: [], Layers: ['l/layer.tar'] }])], fails('ErrCorrupt', /config has 2 diff_ids but there are 1 layers/)],
    ['bad-tag', [{ name: 'c.json', data: cfg }, { name: 'l/layer.tar', data: layerData }, mj([{ Config: 'c.json', RepoTags: ['Bad:Tag'], Layers: ['l/layer.tar'] }])], fails('ErrInvalidArgument', /must be lowercase/)],
    ['dotdot', [{ name: '../evil', data: Buffer.from('x') }], fails('ErrCorrupt', /contains "\.\."/)],
    ['config-escape', [mj([{ Config: '../../etc/passwd', RepoTags: [], Layers: [] }])], fails('ErrCorrupt', /contains "\.\."/)],
    ['symlink-escape', [{ name: 'c.json', data: cfg }, { name: 'l/layer.tar', symlink: '../../../etc/shadow' }, mj([{ Config: 'c.json', RepoTags: [], Layers: ['l/layer.tar'] }])], fails('ErrCorrupt', /contains "\.\."/)],
  ];
  const m = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(cfg), size: cfg.length }, layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+bzip2', digest: goodLayer.diffID, size: goodLayer.size }] }));
  const idx = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha256(m), size: m.length }] }));
  cases.push(['bzip2-layer', [
    { name: `blobs/sha256/${sha256(m).slice(7)}`, data: m }, { name: `blobs/sha256/${sha256(cfg).slice(7)}`, data: cfg },
    { name: `blobs/sha256/${goodLayer.diffID.slice(7)}`, data: layerData }, { name: 'index.json', data: idx },
  ], fails('ErrUnsupported', /unsupported layer media type "application\/vnd\.oci\.image\.layer\.v1\.tar\+bzip2"/)]);
  const schema1 = Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [] }));
  const idx1 = Buffer.from(JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.docker.distribution.manifest.v1+prettyjws', digest: sha256(schema1), size: schema1.length }] }));
  cases.push(['schema1', [{ name: `blobs/sha256/${sha256(schema1).slice(7)}`, data: schema1 }, { name: 'index.json', data: idx1 }], fails('ErrUnsupported', /not an image|schema 1/)]);
  for (const [name, entries, check] of cases) {
    const p = join(dir, `${name}.tar`);
    pythonTar(p, entries);
    await rejectsLeavingStoreAsItWas(p, check);
  }
});

test('OCI layout directory with a missing blob', async () => {
  const broken = join(dir, 'broken-layout');
  run('cp', ['-a', layout, broken]);
  await rm(join(broken, 'blobs', 'sha256', umociImage.layers[1]!.slice(7)));
  await rejectsLeavingStoreAsItWas({ dir: broken }, fails('ErrCorrupt', /is missing/));
  assert.ok((await stat(join(broken, 'index.json'))).isFile());
});
