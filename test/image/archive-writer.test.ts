import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readFile, readdir } from 'node:fs/promises';
import { createReadStream, createWriteStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { writeImageArchive, writeImageLayoutDir } from '../../src/image/archive-writer.js';
import { readImageArchive } from '../../src/image/archive-reader.js';
import { LocalContentStore } from '../../src/content/local-content-store.js';
import { isStrataError } from '../../src/errors.js';
import { digestHex, sha256 } from '../../src/util/digest.js';
import { buildLayer, run, saveImage, type BuiltLayer } from './archive-fixtures.js';

let dir: string;
let base: BuiltLayer;
let top: BuiltLayer;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'strata-archive-writer-'));
  base = await buildLayer(dir, 'base', { 'etc/os-release': 'NAME=test\n', 'bin/hello': '#!/bin/sh\necho hi\n' });
  top = await buildLayer(dir, 'top', { 'app/data.txt': 'payload\n'.repeat(1000) });
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const images = () => [saveImage(['a:1'], [base]), saveImage(['localhost:5000/b/c:2', 'b'], [base, top])];

async function toFile(r: Readable, name: string): Promise<string> {
  const p = join(dir, name);
  await pipeline(r, createWriteStream(p));
  return p;
}

test('docker format: Docker 25 layout, shared layer written once, read back by skopeo, umoci and ourselves', async () => {
  const archive = await toFile(writeImageArchive(images(), 'docker'), 'docker.tar');
  const names = run('tar', ['-tf', archive]).trim().split('\n');
  assert.equal(names.filter((n) => n === `blobs/sha256/${digestHex(base.diffID)}`).length, 1, 'shared layer once');
  for (const f of ['oci-layout', 'index.json', 'manifest.json', 'repositories']) assert.ok(names.includes(f), f);

  const manifestJson = JSON.parse(run('tar', ['-xOf', archive, 'manifest.json'])) as Array<{ Config: string; RepoTags: string[]; Layers: string[] }>;
  assert.deepEqual(manifestJson[1]!.RepoTags, ['localhost:5000/b/c:2', 'b:latest']);
  assert.deepEqual(manifestJson[1]!.Layers, [`blobs/sha256/${digestHex(base.diffID)}`, `blobs/sha256/${digestHex(top.diffID)}`]);
  const index = JSON.parse(run('tar', ['-xOf', archive, 'index.json'])) as { manifests: Array<{ annotations?: Record<string, string> }> };
  assert.deepEqual(index.manifests.map((m) => m.annotations?.['io.containerd.image.name']), ['docker.io/library/a:1', 'localhost:5000/b/c:2', 'docker.io/library/b:latest']);
  assert.deepEqual(JSON.parse(run('tar', ['-xOf', archive, 'repositories'])), { a: { '1': digestHex(base.diffID) }, 'localhost:5000/b/c': { '2': digestHex(top.diffID) }, b: { latest: digestHex(top.diffID) } });

  // skopeo reads it as a docker archive and converts it to an OCI layout that umoci unpacks.
  const layout = join(dir, 'from-docker');
  run('skopeo', ['copy', `docker-archive:${archive}:localhost:5000/b/c:2`, `oci:${layout}:t`]);
  const bundle = join(dir, 'bundle-docker');
  run('umoci', ['unpack', '--image', `${layout}:t`, bundle]);
  assert.equal(await readFile(join(bundle, 'rootfs', 'app', 'data.txt'), 'utf8'), 'payload\n'.repeat(1000));
  assert.equal(await readFile(join(bundle, 'rootfs', 'etc', 'os-release'), 'utf8'), 'NAME=test\n');

  const store = new LocalContentStore(join(dir, 'store-docker'));
  const got = await readImageArchive(createReadStream(archive), store);
  assert.equal(got.images.length, 2);
  assert.deepEqual(got.images[1]!.repoTags, ['localhost:5000/b/c:2', 'b:latest']);
  assert.deepEqual(got.images[1]!.layers.map((l) => [l.digest, l.size, l.mediaType]), [
    [base.diffID, base.size, 'application/vnd.oci.image.layer.v1.tar'],
    [top.diffID, top.size, 'application/vnd.oci.image.layer.v1.tar'],
  ]);
  assert.ok(got.images[1]!.config.raw.equals(images()[1]!.config.raw));
  assert.ok(got.images[1]!.manifest, 'the OCI manifest of the combined layout is attached');
  assert.equal(got.blobsIngested.length, 2 + 2 + 2, 'two layers, two configs, two manifests');
});

test('oci format: skopeo inspects the oci-archive, umoci unpacks the layout', async () => {
  const archive = await toFile(writeImageArchive(images(), 'oci'), 'oci.tar');
  const names = run('tar', ['-tf', archive]).trim().split('\n');
  assert.ok(!names.includes('manifest.json'));
  const info = JSON.parse(run('skopeo', ['inspect', `oci-archive:${archive}:2`])) as { Layers: string[]; Architecture: string };
  assert.deepEqual(info.Layers, [base.diffID, top.diffID]);
  assert.equal(info.Architecture, 'amd64');
  const layout = join(dir, 'oci-extracted');
  run('mkdir', ['-p', layout]);
  run('tar', ['-xf', archive, '-C', layout]);
  const bundle = join(dir, 'bundle-oci');
  run('umoci', ['unpack', '--image', `${layout}:1`, bundle]);
  assert.equal(await readFile(join(bundle, 'rootfs', 'bin', 'hello'), 'utf8'), '#!/bin/sh\necho hi\n');
  const got = await readImageArchive(createReadStream(archive), new LocalContentStore(join(dir, 'store-oci')));
  assert.deepEqual(got.images.map((i) => [i.repoTags, i.refNames]), [
    [['a:1'], ['1']],
    [['localhost:5000/b/c:2', 'b:latest'], ['2', 'latest']],
  ]);
});

test('layout directory: umoci unpacks it, rewriting keeps blobs, readImageArchive reads it', async () => {
  const layout = join(dir, 'layout-dir');
  await writeImageLayoutDir(layout, images());
  await writeImageLayoutDir(layout, images());
  assert.equal((await readdir(join(layout, 'blobs', 'sha256'))).length, 2 + 2 + 2);
  const bundle = join(dir, 'bundle-dir');
  run('umoci', ['unpack', '--image', `${layout}:2`, bundle]);
  assert.equal(await readFile(join(bundle, 'rootfs', 'app', 'data.txt'), 'utf8'), 'payload\n'.repeat(1000));
  const got = await readImageArchive({ dir: layout }, new LocalContentStore(join(dir, 'store-dir')));
  assert.deepEqual(got.images[1]!.layers.map((l) => l.digest), [base.diffID, top.diffID]);
});

test('a layer whose content does not match its diffID fails the stream, and its bytes are never all emitted', async () => {
  const tampered = async (l: BuiltLayer) => {
    const data = await readFile(l.path);
    data[600] ^= 0xff;
    return Readable.from([data]);
  };
  const img = saveImage(['x:1'], [base], tampered);
  const out = writeImageArchive([img], 'docker');
  let bytes = 0;
  await assert.rejects(
    (async () => {
      for await (const c of out) bytes += (c as Buffer).length;
    })(),
    (e: unknown) => isStrataError(e, 'ErrDigestMismatch') && e.message.includes(base.diffID),
  );
  assert.ok(bytes < 1024 + base.size, `only ${bytes} bytes emitted`);
  const short = saveImage(['x:1'], [base], async (l) => Readable.from([(await readFile(l.path)).subarray(10)]));
  await assert.rejects(toFile(writeImageArchive([short], 'oci'), 'short.tar'), (e: unknown) => isStrataError(e, 'ErrSizeMismatch'));
  await assert.rejects(writeImageLayoutDir(join(dir, 'bad-layout'), [img]), (e: unknown) => isStrataError(e, 'ErrDigestMismatch'));
  assert.deepEqual(await readdir(join(dir, 'bad-layout', 'blobs', 'sha256')), [], 'no partial blob is left in the layout');
});

test('an untagged image gets RepoTags null and an index entry without names', async () => {
  const archive = await toFile(writeImageArchive([saveImage([], [base])], 'docker'), 'untagged.tar');
  const mj = JSON.parse(run('tar', ['-xOf', archive, 'manifest.json'])) as Array<{ RepoTags: unknown }>;
  assert.equal(mj[0]!.RepoTags, null);
  assert.ok(!run('tar', ['-tf', archive]).split('\n').includes('repositories'));
  const got = await readImageArchive(createReadStream(archive), new LocalContentStore(join(dir, 'store-untagged')));
  assert.deepEqual(got.images[0]!.repoTags, []);
  assert.equal(got.images[0]!.config.digest, sha256(got.images[0]!.config.raw));
});
