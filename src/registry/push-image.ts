import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Stores } from '../stores.js';
import type { RegistryConfig } from '../config.js';
import { invalidArgument } from '../errors.js';
import { digestHex, sha256, type Digest } from '../util/digest.js';
import { compressStream, layerMediaType, mediaTypeCompression } from '../archive/compression.js';
import { chainIDs } from '../layer/chain-id.js';
import { MediaType } from '../image/media-types.js';
import type { Descriptor } from '../image/manifest.js';
import { familiarName, familiarString, parseReference, withDefaultTag } from '../image/reference.js';
import { resolveImage, tagKey } from '../image/resolve-image.js';
import { BlobSources, type BlobSource } from './blob-sources.js';
import { CredentialStore, type Credentials } from './credentials.js';
import { Limiter } from './limiter.js';
import { byteProgress, type ProgressEvent } from './progress.js';
import { RegistryClient } from './registry-client.js';
import { registryEndpoints } from './registry-endpoint.js';
import { describe } from './pull-image.js';

export interface PushOptions {
  credentials?: Credentials;
  credentialStore?: CredentialStore;
  /** Blobs larger than this go up in chunked PATCHes of this size; smaller ones in one PUT. Default 32 MiB. */
  chunkSize?: number;
}

export interface PushResult {
  reference: string;
  digest: Digest;
  size: number;
}

const DEFAULT_CHUNK = 32 << 20;
/** How many known blobs of a layer are asked about before compressing it anew. */
const MAX_CANDIDATES = 5;

/** The first `length` bytes of a stream. */
function take(source: Readable, length: number): Readable {
  async function* gen(): AsyncGenerator<Buffer> {
    let left = length;
    try {
      for await (const c of source as AsyncIterable<Buffer>) {
        if (left <= 0) break;
        const part = c.length > left ? c.subarray(0, left) : c;
        left -= part.length;
        yield part;
        if (left <= 0) break;
      }
    } finally {
      source.destroy();
    }
  }
  return Readable.from(gen(), { objectMode: false });
}

/**
 * `docker push`: every layer (in parallel, at most max-concurrent-uploads) then the config then the manifest (Docker
 * schema 2). A layer's known compressed blobs (pulled or pushed before) are checked with HEAD and mounted across
 * repositories of the same registry; otherwise the layer's byte-exact tar is gzip-compressed into the content store
 * (hashing as it goes, since the upload needs the digest first) and uploaded, monolithic or chunked.
 */
export async function pushImage(s: Stores, cfg: RegistryConfig, text: string, opts: PushOptions = {}): Promise<PushResult> {
  const ref = withDefaultTag(parseReference(text));
  const image = await resolveImage(s, familiarString(ref));
  const [ep] = registryEndpoints(ref.domain, cfg).filter((e) => !e.mirror);
  const emit = (e: ProgressEvent) => s.events.emit('progress', e);
  const client = new RegistryClient(ep!, ref.path, opts.credentialStore ?? new CredentialStore(), 'pull,push', opts.credentials);
  const repository = `${ep!.name}/${ref.path}`;
  const sources = new BlobSources(s.root, s.driver.name);
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK;
  emit({ status: `The push refers to repository [${ref.domain === 'docker.io' ? 'docker.io/' : ''}${familiarName(ref)}]` });
  try {
    const diffIDs = image.config.rootfs.diff_ids;
    const chains = chainIDs(diffIDs);
    const limiter = new Limiter(cfg.maxConcurrentUploads);
    const order = [...diffIDs.keys()].reverse(); // docker lists the top layer first
    for (const i of order) emit({ id: digestHex(diffIDs[i]!).slice(0, 12), status: 'Preparing' });
    const layers: Descriptor[] = await Promise.all(
      diffIDs.map((diffID, i) =>
        limiter.run(
          () => pushLayer(s, client, sources, repository, diffID, chains[i]!, chunkSize, emit),
          () => emit({ id: digestHex(diffID).slice(0, 12), status: 'Waiting' }),
        ),
      ),
    );
    const configDesc: Descriptor = { mediaType: MediaType.dockerConfig, digest: image.id, size: image.raw.length };
    if ((await client.headBlob(image.id)) === null) {
      await client.uploadBlob(image.id, image.raw.length, () => Readable.from([image.raw]), chunkSize);
    }
    const manifest = { schemaVersion: 2, mediaType: MediaType.dockerManifest, config: configDesc, layers };
    const raw = Buffer.from(JSON.stringify(manifest, null, 3));
    const digest = sha256(raw);
    if (ref.digest !== undefined && ref.digest !== digest) {
      throw invalidArgument(`the manifest of this image is ${digest}, not ${ref.digest}: push it by tag`);
    }
    await client.putManifest(ref.digest ?? ref.tag!, raw, MediaType.dockerManifest);
    const [repo] = tagKey(ref);
    await s.tags.set(repo, `${familiarName(ref)}@${digest}`, image.id);
    emit({ status: `${ref.tag ?? ref.digest}: digest: ${digest} size: ${raw.length}` });
    return { reference: familiarString(ref), digest, size: raw.length };
  } catch (e) {
    throw describe(e, `pushing ${familiarString(ref)} to ${ep!.name}`);
  }
}

async function pushLayer(s: Stores, client: RegistryClient, sources: BlobSources, repository: string, diffID: Digest, chain: Digest, chunkSize: number, emit: (e: ProgressEvent) => void): Promise<Descriptor> {
  const id = digestHex(diffID).slice(0, 12);
  const registry = client.endpoint.name;
  const asDescriptor = (b: BlobSource): Descriptor => ({ mediaType: layerMediaType('docker', mediaTypeCompression(b.mediaType)), digest: b.digest, size: b.size });
  const known = (await sources.get(diffID)).slice(0, MAX_CANDIDATES);
  for (const b of known) {
    if ((await client.headBlob(b.digest)) !== null) {
      emit({ id, status: 'Layer already exists' });
      await sources.add(diffID, { ...b, repository });
      return asDescriptor(b);
    }
  }
  for (const b of known) {
    const from = b.repository.startsWith(`${registry}/`) ? b.repository.slice(registry.length + 1) : undefined;
    if (from === undefined || from === client.repository) continue;
    if (await client.mountBlob(b.digest, from).catch(() => false)) {
      emit({ id, status: `Mounted from ${from}` });
      await sources.add(diffID, { ...b, repository });
      return asDescriptor(b);
    }
  }
  // Compress into the content store first: the upload must name the digest, known only after the last byte.
  const gzip = compressStream('gzip');
  const tar = await s.layers.tarStream(chain);
  tar.on('error', (e) => gzip.destroy(e));
  const blob = await s.content.ingest(`push-${digestHex(diffID)}-${randomBytes(4).toString('hex')}`, tar.pipe(gzip));
  try {
    if ((await client.headBlob(blob.digest)) !== null) {
      emit({ id, status: 'Layer already exists' });
    } else {
      emit(byteProgress(id, 'Pushing', 0, blob.size));
      await client.uploadBlob(blob.digest, blob.size, (offset, length) => take(s.content.reader(blob.digest, offset), length), chunkSize, (n) =>
        emit(byteProgress(id, 'Pushing', n, blob.size)),
      );
      emit({ id, status: 'Pushed' });
    }
  } finally {
    if (blob.created) await s.content.delete(blob.digest).catch(() => undefined);
  }
  const src: BlobSource = { digest: blob.digest, size: blob.size, mediaType: layerMediaType('docker', 'gzip'), repository };
  await sources.add(diffID, src);
  return asDescriptor(src);
}

