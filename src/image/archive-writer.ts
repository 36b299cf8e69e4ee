import { createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { writeTar, type TarWriteEntry } from '../archive/tar/tar-writer.js';
import type { TarHeader } from '../archive/tar/tar-header.js';
import { digestMismatch, isErrno, sizeMismatch } from '../errors.js';
import { fsyncDir, tempSibling, writeFileAtomic } from '../util/atomic.js';
import { Digester, digestHex, type Digest } from '../util/digest.js';
import { descriptorOf, type Descriptor, type ImageIndex, type ImageManifest } from './manifest.js';
import { MediaType } from './media-types.js';
import { familiarName, familiarString, formatReference, parseReference, withDefaultTag } from './reference.js';

export interface SaveLayer {
  /** Digest of the uncompressed layer tar: it is written uncompressed, so this is also its blob digest. */
  diffID: Digest;
  size: number;
  /** The uncompressed layer tar; verified against diffID and size while it is written. */
  open(): Promise<Readable>;
}

export interface SaveImage {
  /** `name:tag` references, any form `parseReference` accepts. */
  repoTags: string[];
  config: { raw: Buffer; digest: Digest };
  layers: SaveLayer[];
}

export type ArchiveFormat = 'docker' | 'oci';

interface Blob {
  digest: Digest;
  size: number;
  body: Buffer | SaveLayer;
}

/** What an OCI layout (plus docker's files) holds: blobs once each, then the small metadata files. */
interface Layout {
  blobs: Blob[];
  files: Array<{ path: string; data: Buffer }>;
}

const ANNOTATION_REF_NAME = 'org.opencontainers.image.ref.name';
const ANNOTATION_IMAGE_NAME = 'io.containerd.image.name';
const json = (v: unknown) => Buffer.from(JSON.stringify(v));
const blobPath = (d: Digest) => `blobs/sha256/${digestHex(d)}`;

function planLayout(images: SaveImage[], format: ArchiveFormat): Layout {
  const blobs = new Map<Digest, Blob>();
  const add = (b: Blob) => {
    if (!blobs.has(b.digest)) blobs.set(b.digest, b);
  };
  const index: ImageIndex = { schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] };
  const dockerManifest: Array<{ Config: string; RepoTags: string[] | null; Layers: string[] }> = [];
  const repositories: Record<string, Record<string, string>> = {};
  for (const img of images) {
    for (const l of img.layers) add({ digest: l.diffID, size: l.size, body: l });
    add({ digest: img.config.digest, size: img.config.raw.length, body: img.config.raw });
    const manifest: ImageManifest = {
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: img.config.digest, size: img.config.raw.length },
      layers: img.layers.map((l) => ({ mediaType: MediaType.ociLayer, digest: l.diffID, size: l.size })),
    };
    const raw = json(manifest);
    const desc: Descriptor = descriptorOf(MediaType.ociManifest, raw);
    add({ digest: desc.digest, size: raw.length, body: raw });
    const refs = img.repoTags.map((t) => withDefaultTag(parseReference(t)));
    if (refs.length === 0) index.manifests.push(desc);
    for (const ref of refs) {
      index.manifests.push({ ...desc, annotations: { [ANNOTATION_IMAGE_NAME]: formatReference(ref), [ANNOTATION_REF_NAME]: ref.tag! } });
      const top = img.layers.at(-1);
      if (top) (repositories[familiarName(ref)] ??= {})[ref.tag!] = digestHex(top.diffID);
    }
    dockerManifest.push({
      Config: blobPath(img.config.digest),
      // docker writes null, not [], for an image saved by id
      RepoTags: refs.length > 0 ? refs.map(familiarString) : null,
      Layers: img.layers.map((l) => blobPath(l.diffID)),
    });
  }
  const files = [
    { path: 'oci-layout', data: json({ imageLayoutVersion: '1.0.0' }) },
    { path: 'index.json', data: json(index) },
  ];
  if (format === 'docker') {
    files.push({ path: 'manifest.json', data: json(dockerManifest) });
    if (Object.keys(repositories).length > 0) files.push({ path: 'repositories', data: json(repositories) });
  }
  return { blobs: [...blobs.values()], files };
}

/** A layer's bytes, checked against its diffID and size as they pass; the last chunk is held back until both match. */
async function* verifiedLayer(layer: SaveLayer): AsyncGenerator<Buffer> {
  const digester = new Digester();
  const stream = await layer.open();
  let held: Buffer | undefined;
  try {
    for await (const chunk of stream) {
      digester.update(chunk as Buffer);
      if (digester.size > layer.size) throw sizeMismatch(`layer ${layer.diffID}: content is longer than its recorded ${layer.size} bytes`);
      if (held) yield held;
      held = chunk as Buffer;
    }
  } finally {
    stream.destroy();
  }
  if (digester.size !== layer.size) throw sizeMismatch(`layer ${layer.diffID}: content has ${digester.size} bytes, recorded size is ${layer.size}`);
  const actual = await digester.digest();
  if (actual !== layer.diffID) throw digestMismatch(`layer ${layer.diffID}: content digest is ${actual}`);
  if (held) yield held;
}

const bodyOf = (b: Blob): Buffer | AsyncIterable<Buffer> => (Buffer.isBuffer(b.body) ? b.body : verifiedLayer(b.body));

function header(name: string, type: 'file' | 'directory', size: number): TarHeader {
  return {
    name,
    type,
    mode: type === 'directory' ? 0o755 : 0o644,
    uid: 0,
    gid: 0,
    uname: '',
    gname: '',
    size,
    mtime: { sec: 0, nsec: 0 },
    linkname: '',
    devmajor: 0,
    devminor: 0,
    xattrs: new Map(),
    pax: new Map(),
  };
}

async function* tarEntries(layout: Layout): AsyncGenerator<TarWriteEntry> {
  yield { header: header('blobs/', 'directory', 0) };
  yield { header: header('blobs/sha256/', 'directory', 0) };
  for (const b of layout.blobs) yield { header: header(blobPath(b.digest), 'file', b.size), body: bodyOf(b) };
  for (const f of layout.files) yield { header: header(f.path, 'file', f.data.length), body: f.data };
}

/**
 * The images as a tar stream, as Docker 25+ `docker save` writes it: an OCI image layout (uncompressed layers,
 * configs, OCI manifests, index.json naming each tag) plus, for 'docker', `manifest.json` and `repositories` that
 * point into it. Each layer is written once however many images share it. A layer whose content does not match
 * its diffID makes the stream fail.
 */
export function writeImageArchive(images: SaveImage[], format: ArchiveFormat): Readable {
  // Plan eagerly: a bad tag fails here, before any byte is produced.
  return writeTar(tarEntries(planLayout(images, format)));
}

/**
 * The images as an OCI image-layout directory (created if absent). Blobs already there are kept (they are
 * content-addressed); each new one appears atomically; `index.json` is replaced by one naming these images.
 */
export async function writeImageLayoutDir(dir: string, images: SaveImage[]): Promise<void> {
  const layout = planLayout(images, 'oci');
  const blobsDir = join(dir, 'blobs', 'sha256');
  await mkdir(blobsDir, { recursive: true });
  for (const b of layout.blobs) {
    const target = join(blobsDir, digestHex(b.digest));
    const have = await stat(target).catch((e: unknown) => {
      if (isErrno(e, 'ENOENT')) return undefined;
      throw e;
    });
    if (have?.isFile() && have.size === b.size) continue;
    const tmp = tempSibling(target);
    try {
      const body = bodyOf(b);
      await pipeline(Buffer.isBuffer(body) ? Readable.from([body]) : Readable.from(body), createWriteStream(tmp, { flags: 'wx', mode: 0o644 }));
      const fh = await open(tmp, 'r');
      await fh.sync().finally(() => fh.close());
      await rename(tmp, target);
    } catch (e) {
      await rm(tmp, { force: true });
      throw e;
    }
  }
  await fsyncDir(blobsDir);
  for (const f of layout.files) await writeFileAtomic(join(dir, f.path), f.data);
}
