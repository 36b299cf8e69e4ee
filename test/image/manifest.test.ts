import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isIndex, parseImageConfig, parseManifest, type ImageIndex, type ImageManifest } from '../../src/image/manifest.js';
import { MediaType } from '../../src/image/media-types.js';
import { currentPlatform, parsePlatform, platformMatches, selectManifest } from '../../src/image/platform.js';
import { isStrataError, type ErrorCode } from '../../src/errors.js';
import { sha256 } from '../../src/util/digest.js';

const d = (s: string) => sha256(s);
const j = (v: unknown) => Buffer.from(JSON.stringify(v));
const fails = (code: ErrorCode, re: RegExp) => (e: unknown) => isStrataError(e, code) && re.test(e.message) && !e.message.includes('\n');

const ociManifest = {
  schemaVersion: 2,
  mediaType: MediaType.ociManifest,
  config: { mediaType: MediaType.ociConfig, digest: d('c'), size: 10 },
  layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: d('l'), size: 20 }],
  subject: { mediaType: MediaType.ociManifest, digest: d('s'), size: 5 },
  annotations: { a: 'b' },
};

test('parseManifest keeps raw bytes and digests them as stored', () => {
  const raw = Buffer.from(JSON.stringify(ociManifest, null, 3)); // odd formatting is kept
  const doc = parseManifest(raw);
  assert.equal(doc.raw, raw);
  assert.equal(doc.digest, sha256(raw));
  assert.equal(isIndex(doc.parsed), false);
  const m = doc.parsed as ImageManifest;
  assert.equal(m.mediaType, MediaType.ociManifest);
  assert.equal(m.layers[0]!.size, 20);
  assert.equal(m.subject?.digest, d('s'));
  assert.deepEqual(m.annotations, { a: 'b' });
});

test('media type detected from content when absent, and checked against a declared one', () => {
  const { mediaType: _m, ...bare } = ociManifest;
  assert.equal(parseManifest(j(bare)).parsed.mediaType, MediaType.ociManifest);
  assert.equal(parseManifest(j(bare), MediaType.ociManifest).parsed.mediaType, MediaType.ociManifest);
  const index = { schemaVersion: 2, manifests: [{ mediaType: MediaType.ociManifest, digest: d('m'), size: 1, platform: { os: 'linux', architecture: 'amd64' } }] };
  assert.ok(isIndex(parseManifest(j(index)).parsed));
  assert.equal(parseManifest(j({ ...index, mediaType: MediaType.dockerManifestList })).parsed.mediaType, MediaType.dockerManifestList);
  assert.equal(parseManifest(j({ ...bare, mediaType: MediaType.dockerManifest })).parsed.mediaType, MediaType.dockerManifest);
  assert.throws(() => parseManifest(j(bare), MediaType.ociIndex), fails('ErrCorrupt', /declared as application\/vnd\.oci\.image\.index\.v1\+json but its content is application\/vnd\.oci\.image\.manifest\.v1\+json/));
  assert.throws(() => parseManifest(j(ociManifest), MediaType.dockerManifest), fails('ErrCorrupt', /declared as/));
  assert.throws(() => parseManifest(j({ ...index, mediaType: MediaType.ociManifest })), fails('ErrUnsupported', /for an index/));
  assert.throws(() => parseManifest(j({ ...bare, mediaType: 'text/plain' })), fails('ErrUnsupported', /unsupported manifest media type "text\/plain"/));
});

test('schema 1 is rejected clearly', () => {
  assert.throws(() => parseManifest(j({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [], history: [] })), fails('ErrUnsupported', /schema 1 is not supported/));
  assert.throws(() => parseManifest(j({ schemaVersion: 2, config: {}, layers: [] }), MediaType.dockerSchema1Signed), fails('ErrUnsupported', /schema 1/));
});

test('structure and size are validated', () => {
  assert.throws(() => parseManifest(Buffer.alloc((4 << 20) + 1, 0x20)), fails('ErrLimit', /more than the 4194304 allowed/));
  assert.throws(() => parseManifest(Buffer.from('{nope')), fails('ErrCorrupt', /not valid JSON/));
  assert.throws(() => parseManifest(Buffer.from('[]')), fails('ErrCorrupt', /not a JSON object/));
  assert.throws(() => parseManifest(j({ ...ociManifest, schemaVersion: 3 })), fails('ErrCorrupt', /schemaVersion 3/));
  assert.throws(() => parseManifest(j({ schemaVersion: 2 })), fails('ErrCorrupt', /neither/));
  assert.throws(() => parseManifest(j({ ...ociManifest, layers: [{ mediaType: 'x', digest: 'sha256:abc', size: 1 }] })), fails('ErrCorrupt', /layers\[0\]: invalid digest/));
  assert.throws(() => parseManifest(j({ ...ociManifest, layers: [{ mediaType: 'x', digest: d('x'), size: -1 }] })), fails('ErrCorrupt', /invalid size/));
  assert.throws(() => parseManifest(j({ ...ociManifest, config: undefined })), fails('ErrCorrupt', /config: descriptor is not an object/));
  assert.throws(() => parseManifest(j({ ...ociManifest, annotations: { a: 1 } })), fails('ErrCorrupt', /annotations/));
  assert.throws(() => parseManifest(j({ schemaVersion: 2, manifests: [{ mediaType: MediaType.ociManifest, digest: d('m'), size: 1, platform: { os: 'linux' } }] })), fails('ErrCorrupt', /platform needs os and architecture/));
});

const config = {
  architecture: 'arm',
  os: 'linux',
  variant: 'v7',
  created: '2024-01-01T00:00:00Z',
  author: 'me',
  config: { Env: ['A=1'], Cmd: null, Entrypoint: ['/bin/sh'], WorkingDir: '/w', User: '1:1', Labels: { l: 'v' }, Volumes: { '/data': {} }, ExposedPorts: { '80/tcp': {} } },
  rootfs: { type: 'layers', diff_ids: [d('1'), d('2')] },
  history: [{ created_by: 'a' }, { created_by: 'ENV', empty_layer: true }, { created_by: 'b', comment: 'c', author: 'x' }],
};

test('parseImageConfig reads OCI/Docker configs, dropping docker nulls', () => {
  const c = parseImageConfig(j(config));
  assert.equal(c.architecture, 'arm');
  assert.equal(c.variant, 'v7');
  assert.deepEqual(c.rootfs.diff_ids, [d('1'), d('2')]);
  assert.equal(c.config?.Cmd, undefined);
  assert.deepEqual(c.config?.Entrypoint, ['/bin/sh']);
  assert.deepEqual(c.config?.Volumes, { '/data': {} });
  assert.equal(c.history?.[1]?.empty_layer, true);
  const minimal = parseImageConfig(j({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  assert.equal(minimal.config, undefined);
  assert.equal(minimal.history, undefined);
});

test('parseImageConfig rejects malformed configs', () => {
  const bad = (patch: Record<string, unknown>, re: RegExp) => assert.throws(() => parseImageConfig(j({ ...config, ...patch })), fails('ErrCorrupt', re));
  bad({ rootfs: { type: 'layers', diff_ids: ['sha256:short'] } }, /rootfs\.diff_ids\[0\] is not a sha256 digest/);
  bad({ rootfs: { type: 'snapshot', diff_ids: [] } }, /rootfs\.type must be "layers"/);
  bad({ rootfs: undefined }, /rootfs\.type/);
  bad({ architecture: undefined }, /no architecture/);
  bad({ os: 5 }, /no os/);
  bad({ config: { Env: 'A=1' } }, /config\.Env must be a list of strings/);
  bad({ config: { Labels: { a: 1 } } }, /config\.Labels/);
  bad({ history: [{ empty_layer: 'yes' }] }, /history\[0\]\.empty_layer/);
  bad({ created: 5 }, /created must be a string/);
  assert.throws(() => parseImageConfig(Buffer.alloc((8 << 20) + 1, 0x20)), fails('ErrLimit', /image config is/));
});

test('platform matching and index selection', () => {
  assert.equal(currentPlatform().os, 'linux');
  if (process.arch === 'x64') assert.deepEqual(currentPlatform(), { os: 'linux', architecture: 'amd64' });
  assert.ok(platformMatches(parsePlatform('linux/arm64'), parsePlatform('linux/arm64/v8')));
  assert.ok(platformMatches(parsePlatform('linux/arm/v7'), parsePlatform('linux/arm/v6')));
  assert.ok(!platformMatches(parsePlatform('linux/arm/v6'), parsePlatform('linux/arm/v7')));
  assert.ok(platformMatches(parsePlatform('linux/arm/v7'), { os: 'linux', architecture: 'arm' }));
  assert.ok(!platformMatches(parsePlatform('linux/amd64'), parsePlatform('linux/arm64')));
  assert.ok(!platformMatches(parsePlatform('linux/amd64'), parsePlatform('windows/amd64')));
  assert.throws(() => parsePlatform('linux'), fails('ErrInvalidArgument', /want os\/arch/));

  const entry = (p: string, extra: Record<string, unknown> = {}) => ({ mediaType: MediaType.ociManifest, digest: d(p), size: 1, platform: parsePlatform(p), ...extra });
  const index: ImageIndex = {
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: [
      entry('unknown/unknown', { annotations: { 'vnd.docker.reference.type': 'attestation-manifest' } }),
      entry('linux/arm/v6'),
      entry('linux/arm/v7'),
      entry('linux/arm64/v8'),
      entry('linux/amd64'),
    ],
  };
  assert.equal(selectManifest(index, parsePlatform('linux/amd64')).digest, d('linux/amd64'));
  assert.equal(selectManifest(index, parsePlatform('linux/arm64')).digest, d('linux/arm64/v8'));
  assert.equal(selectManifest(index, parsePlatform('linux/arm/v7')).digest, d('linux/arm/v7'));
  assert.equal(selectManifest({ ...index, manifests: index.manifests.filter((m) => m.digest !== d('linux/arm/v7')) }, parsePlatform('linux/arm/v8')).digest, d('linux/arm/v6'));
  assert.throws(() => selectManifest(index, parsePlatform('linux/s390x')), fails('ErrNotFound', /no matching manifest for linux\/s390x.*linux\/amd64/));
  const single = { ...index, manifests: [{ mediaType: MediaType.ociManifest, digest: d('only'), size: 1 }] };
  assert.equal(selectManifest(single, parsePlatform('linux/s390x')).digest, d('only'));
});
