import { Transform, type Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Stores } from '../stores.js';
import type { RegistryConfig } from '../config.js';
import { StrataError, corrupt, digestMismatch, isStrataError, sizeMismatch, unsupported } from '../errors.js';
import { sha256, digestHex, type Digest } from '../util/digest.js';
import { decompress, mediaTypeCompression } from '../archive/compression.js';
import { chainIDs } from '../layer/chain-id.js';
import { checkLayerCount, isIndex, MAX_CONFIG_SIZE, parseImageConfig, parseManifest, type Descriptor, type ImageManifest, type RawDocument, type Manifest } from '../image/manifest.js';
import { isImageConfigMediaType } from '../image/media-types.js';
import { currentPlatform, parsePlatform, selectManifest } from '../image/platform.js';
import { familiarName, familiarString, parseReference, withDefaultTag, type Reference } from '../image/reference.js';
import { tagKey } from '../image/resolve-image.js';
import { BlobSources } from './blob-sources.js';
import { CredentialStore, type Credentials } from './credentials.js';
import { Limiter } from './limiter.js';
import { byteProgress, type ProgressEvent } from './progress.js';
import { RegistryClient } from './registry-client.js';
import { registryEndpoints, type RegistryEndpoint } from './registry-endpoint.js';
import { NetworkError, networkError } from './http-transport.js';
import { LayerTap } from './layer-tap.js';
import { publishImage, releaseUnpublished } from '../image/publish-image.js';

export interface PullOptions {
  /** `os/arch[/variant]`; default: this machine's. */
  platform?: string;
  /** Every tag of the repository (`pull -a`). */
  allTags?: boolean;
  /** Credentials for this pull, else those of the credential store. */
  credentials?: Credentials;
  credentialStore?: CredentialStore;
}

export interface PullResult {
  /** `name:tag` or `name@digest`, as docker prints it. */
  reference: string;
  /** The manifest (or index) digest the reference resolved to. */
  digest: Digest;
  /** The image id (config digest). */
  id: Digest;
  /** True when nothing new was stored. */
  upToDate: boolean;
}

/** Download attempts per blob after a broken connection (each resumes where the last stopped). */
const BLOB_ATTEMPTS = 6;
const PROGRESS_INTERVAL_MS = 100;
const WAIT_POLL_MS = 100;

/**
 * `docker pull`: resolve the reference (an index to this platform's manifest), then download every missing layer
 * concurrently (at most max-concurrent-downloads at once) into the content store, where each blob is verified
 * against its digest and size before it is visible, while the layers are applied as they arrive (concurrently where
 * the driver can chain a filled layer, else in order). A layer whose chain already exists is not downloaded; a blob another process is downloading
 * is waited for, not fetched twice. On failure the layers this pull registered are released and its blobs removed.
 */
export async function pullImage(s: Stores, cfg: RegistryConfig, text: string, opts: PullOptions = {}): Promise<PullResult[]> {
  const parsed = parseReference(text);
  if (opts.allTags) {
    if (parsed.tag !== undefined || parsed.digest !== undefined) throw new StrataError('ErrInvalidArgument', 'tag can\'t be used with --all-tags/-a');
    const tags = await withEndpoints(s, cfg, parsed, opts, 'listing tags of', (client) => client.listTags());
    const out: PullResult[] = [];
    for (const tag of tags.sort()) out.push(await pullOne(s, cfg, { ...parsed, tag }, opts));
    return out;
  }
  if (parsed.tag === undefined && parsed.digest === undefined) emit(s, { status: 'Using default tag: latest' });
  return [await pullOne(s, cfg, withDefaultTag(parsed), opts)];
}

function emit(s: Stores, e: ProgressEvent): void {
  s.events.emit('progress', e);
}

/** Run `fn` against the registry's endpoints (mirrors first); errors name the operation, reference and registry. */
async function withEndpoints<T>(s: Stores, cfg: RegistryConfig, ref: Reference, opts: PullOptions, verb: string, fn: (c: RegistryClient, ep: RegistryEndpoint) => Promise<T>): Promise<T> {
  const endpoints = registryEndpoints(ref.domain, cfg);
  const store = opts.credentialStore ?? new CredentialStore();
  for (const ep of endpoints) {
    try {
      return await fn(new RegistryClient(ep, ref.path, store, 'pull', opts.credentials), ep);
    } catch (e) {
      if (ep.mirror && !isStrataError(e, 'ErrDigestMismatch')) continue;
      throw describe(e, `${verb} ${familiarString(ref)} from ${ep.name}`);
    }
  }
  throw new StrataError('ErrInternal', 'no registry endpoint');
}

/** One line: `<what>: <reason>`, keeping the error's code. */
export function describe(e: unknown, what: string): StrataError {
  const reason = (e instanceof Error ? e.message : String(e)).split('\n')[0];
  return new StrataError(e instanceof StrataError ? e.code : 'ErrInternal', `${what}: ${reason}`, { cause: e });
}

async function pullOne(s: Stores, cfg: RegistryConfig, ref: Reference, opts: PullOptions): Promise<PullResult> {
  const shown = familiarString(ref);
  if (ref.digest !== undefined) {
    const id = await s.tags.get(...tagKey(ref));
    if (id !== undefined && (await s.images.get(id).then(() => true, () => false))) {
      emit(s, { status: `Digest: ${ref.digest}` });
      emit(s, { status: `Status: Image is up to date for ${shown}` });
      return { reference: shown, digest: ref.digest, id, upToDate: true };
    }
  }
  const want = opts.platform ? parsePlatform(opts.platform) : currentPlatform();
  return withEndpoints(s, cfg, ref, opts, 'pulling', async (client, ep) => {
    emit(s, { id: ref.tag ?? ref.digest!, status: `Pulling from ${ref.path}` });
    const top = await fetchManifest(client, ref.digest ?? ref.tag!);
    let manifestDoc: RawDocument<Manifest> = top;
    if (isIndex(top.parsed)) {
      const d = selectManifest(top.parsed, want);
      manifestDoc = await fetchManifest(client, d.digest, d);
      if (isIndex(manifestDoc.parsed)) throw unsupported(`nested index ${d.digest} is not supported`);
    }
    const manifest = manifestDoc.parsed as ImageManifest;
    if (!isImageConfigMediaType(manifest.config.mediaType)) throw unsupported(`${manifest.config.mediaType} is not an image config: the reference names an artifact, not an image`);
    for (const l of manifest.layers) mediaTypeCompression(l.mediaType);
    const configRaw = await fetchSmallBlob(client, manifest.config, MAX_CONFIG_SIZE);
    const config = parseImageConfig(configRaw);
    checkLayerCount(config, manifest.layers.length, `manifest ${manifestDoc.digest}`);
    const existing = await s.images.get(sha256(configRaw)).then(() => true, () => false);
    const upToDate = existing && (await s.tags.get(...tagKey(ref))) === sha256(configRaw);
    await pullLayers(s, cfg, client, ep, ref, manifest.layers, config.rootfs.diff_ids);
    const [repo, key] = tagKey(ref);
    const image = await publishImage(s, configRaw, {
      named: async (image) => {
        await s.tags.set(repo, key, image.id);
        await s.tags.set(repo, `${familiarName(ref)}@${top.digest}`, image.id);
      },
    });
    emit(s, { status: `Digest: ${top.digest}` });
    emit(s, { status: upToDate ? `Status: Image is up to date for ${shown}` : `Status: Downloaded newer image for ${shown}` });
    return { reference: shown, digest: top.digest, id: image.id, upToDate };
  });
}

/** A manifest, digest- and size-checked against the descriptor that named it, its media type against its content. */
async function fetchManifest(client: RegistryClient, reference: string, desc?: Descriptor): Promise<RawDocument<Manifest>> {
  const m = await client.getManifest(reference);
  if (desc && m.raw.length !== desc.size) throw sizeMismatch(`manifest ${desc.digest} is ${m.raw.length} bytes, its descriptor says ${desc.size}`);
  return parseManifest(m.raw, m.mediaType ?? desc?.mediaType);
}

/** A config-sized blob, read whole within `max` bytes and checked against its descriptor. */
async function fetchSmallBlob(client: RegistryClient, desc: Descriptor, max: number): Promise<Buffer> {
  if (desc.size > max) throw corrupt(`blob ${desc.digest} is ${desc.size} bytes, more than the ${max} allowed`);
  const { body } = await client.getBlob(desc.digest);
  const parts: Buffer[] = [];
  let len = 0;
  try {
    for await (const c of body as AsyncIterable<Buffer>) {
      len += c.length;
      if (len > desc.size) {
        body.destroy();
        throw sizeMismatch(`blob ${desc.digest} is longer than its descriptor's ${desc.size} bytes`);
      }
      parts.push(c);
    }
  } catch (e) {
    if (e instanceof StrataError) throw e;
    throw networkError(e, client.endpoint.name);
  }
  const raw = Buffer.concat(parts, len);
  if (raw.length !== desc.size) throw sizeMismatch(`blob ${desc.digest} is ${raw.length} bytes, its descriptor says ${desc.size}`);
  if (sha256(raw) !== desc.digest) throw digestMismatch(`blob ${desc.digest} has digest ${sha256(raw)}`);
  return raw;
}

/** Progress as at most one event per interval per layer (and always the last). */
function throttled(s: Stores, id: string, status: string, total: number): (n: number, force?: boolean) => void {
  let last = 0;
  return (n, force) => {
    const now = Date.now();
    if (!force && now - last < PROGRESS_INTERVAL_MS) return;
    last = now;
    emit(s, byteProgress(id, status, n, total));
  };
}

async function pullLayers(s: Stores, cfg: RegistryConfig, client: RegistryClient, ep: RegistryEndpoint, ref: Reference, layers: Descriptor[], diffIDs: Digest[]): Promise<void> {
  const chains = chainIDs(diffIDs);
  const present = await Promise.all(chains.map((c) => s.layers.has(c)));
  const shortID = (i: number) => digestHex(layers[i]!.digest).slice(0, 12);
  const sources = new BlobSources(s.root, s.driver.name);
  const repository = `${ep.name}/${ref.path}`;
  const limiter = new Limiter(cfg.maxConcurrentDownloads);
  const created = new Set<Digest>();
  const ingestRefs = new Set<string>();
  /** Indices of the layers this pull registered. */
  const added: number[] = [];
  let failed = false;
  const active = new Set<Readable>();
  // One tap per distinct blob (its first layer): the applier streams that layer while it downloads.
  const taps = new Map<number, LayerTap>();

  /** Make the layer's compressed blob available in the content store (or learn that the layer itself now exists). */
  const download = async (i: number): Promise<void> => {
    const desc = layers[i]!;
    const id = shortID(i);
    const ingestRef = `pull-${desc.digest}`;
    let attempts = 0;
    let waiting = false;
    for (;;) {
      if (failed) throw new StrataError('ErrInternal', 'pull aborted');
      if ((await s.layers.has(chains[i]!)) || (await s.content.info(desc.digest))) break;
      const status = await s.content.ingestStatus(ingestRef);
      const offset = status && status.offset <= desc.size ? status.offset : 0;
      let started = false;
      const progress = throttled(s, id, 'Downloading', desc.size);
      const body = async function* (): AsyncGenerator<Buffer> {
        started = true;
        ingestRefs.add(ingestRef);
        const got = await client.getBlob(desc.digest, offset);
        active.add(got.body);
        const tap = taps.get(i);
        const feeding = tap?.start(offset) === true;
        let skip = offset - got.start;
        let n = offset;
        try {
          for await (const chunk of got.body as AsyncIterable<Buffer>) {
            let c = chunk;
            if (skip > 0) {
              const drop = Math.min(skip, c.length);
              skip -= drop;
              c = c.subarray(drop);
              if (c.length === 0) continue;
            }
            n += c.length;
            progress(n);
            if (feeding) await tap!.write(c);
            yield c;
          }
        } catch (e) {
          tap?.cut();
          throw e instanceof StrataError ? e : networkError(e, client.endpoint.name);
        } finally {
          active.delete(got.body);
        }
        progress(n, true);
        emit(s, { id, status: 'Verifying Checksum' });
      };
      try {
        const r = await s.content.ingest(ingestRef, body(), { digest: desc.digest, size: desc.size, resumeFrom: offset });
        if (r.created) created.add(desc.digest);
        ingestRefs.delete(ingestRef);
        break;
      } catch (e) {
        if (!started && isStrataError(e, 'ErrUnavailable')) {
          // Another process is downloading this blob: wait for it rather than fetching it twice.
          if (!waiting) emit(s, { id, status: 'Waiting' });
          waiting = true;
          await sleep(WAIT_POLL_MS);
          continue;
        }
        if (!started && isStrataError(e, 'ErrNotFound')) continue; // the kept data went away (finished elsewhere)
        if (e instanceof NetworkError && e.transient && ++attempts < BLOB_ATTEMPTS && !failed) {
          await sleep(Math.min(100 * 2 ** attempts, 3_000));
          continue;
        }
        if (isStrataError(e, 'ErrDigestMismatch') || isStrataError(e, 'ErrSizeMismatch')) {
          throw new StrataError(e.code, `layer ${desc.digest}: ${e.message.replace(`ingest ${ingestRef}: `, '')}`);
        }
        throw e;
      }
    }
    emit(s, { id, status: 'Download complete' });
  };

  const downloadFeeding = async (i: number): Promise<void> => {
    try {
      await download(i);
      taps.get(i)?.end();
    } catch (e) {
      taps.get(i)?.cut();
      throw e;
    }
  };

  /** Decompress and register one layer's compressed bytes on `parent` (once `parentReady`), with Extracting progress. */
  const apply = async (i: number, parent: Digest | null, blob: Readable, parentReady: Promise<void>): Promise<void> => {
    const extract = throttled(s, shortID(i), 'Extracting', layers[i]!.size);
    let n = 0;
    const counting = new Transform({
      highWaterMark: 1 << 20,
      transform(chunk: Buffer, _enc, cb) {
        n += chunk.length;
        extract(n);
        cb(null, chunk);
      },
      flush(cb) {
        extract(n, true);
        cb();
      },
    });
    blob.on('error', (e) => counting.destroy(e));
    const { stream } = await decompress(blob.pipe(counting));
    // Corrupt data can fail the decompressor while register is still preparing, before it listens: the error is
    // kept in the stream's state, which register's pipeline reports.
    stream.on('error', () => undefined);
    await s.layers.register(stream, parent, diffIDs[i]!, parentReady);
    added.push(i);
  };

  /**
   * Layer i from its bytes to its chain. A driver that can chain a filled layer (setParent) takes the download
   * stream at once, so the layers of the image decompress and apply concurrently; any other driver waits for
   * the parent first.
   */
  const land = async (i: number, parentReady: Promise<void>): Promise<void> => {
    const desc = layers[i]!;
    const chain = chains[i]!;
    const parent = i === 0 ? null : chains[i - 1]!;
    if (!s.layers.appliesBeforeParent) await parentReady;
    const tap = taps.get(i);
    let streamed = false;
    let tapError: unknown;
    if (tap?.want()) {
      try {
        await apply(i, parent, tap.stream, parentReady);
        streamed = true;
      } catch (e) {
        tap.detach();
        tapError = e;
      }
    }
    // A failed download (a digest mismatch above all) explains a failed apply better than the apply's own error.
    await downloads.get(i);
    if (tapError !== undefined && !tap!.wasCut) throw tapError;
    for (let attempt = 0; !streamed; attempt++) {
      if (await s.layers.has(chain)) break;
      try {
        // The tap was cut (a resumed or shared download): apply from the verified blob in the store.
        await apply(i, parent, s.content.reader(desc.digest), parentReady);
        break;
      } catch (e) {
        // The blob went away under us (another pull finished with it): it registered the layer, or we fetch again.
        if (!isStrataError(e, 'ErrNotFound') || attempt >= 2) throw e;
        if (await s.layers.has(chain)) break;
        await download(i);
      }
    }
    await parentReady;
    emit(s, { id: shortID(i), status: 'Pull complete' });
  };

  const downloads = new Map<number, Promise<void>>();
  const byDigest = new Map<Digest, Promise<void>>();
  for (const i of layers.keys()) emit(s, { id: shortID(i), status: present[i] ? 'Already exists' : 'Pulling fs layer' });
  for (const [i, desc] of layers.entries()) {
    if (present[i]) continue;
    let p = byDigest.get(desc.digest);
    if (!p) {
      taps.set(i, new LayerTap());
      p = limiter.run(() => downloadFeeding(i), () => emit(s, { id: shortID(i), status: 'Waiting' }));
      byDigest.set(desc.digest, p);
    }
    p.catch(() => undefined); // awaited by the layer's landing
    downloads.set(i, p);
  }

  const landings: Promise<void>[] = [];
  let ready: Promise<void> = Promise.resolve();
  for (const i of layers.keys()) {
    // A present chain has present parents: only a suffix of the layers lands.
    ready = present[i] ? ready : land(i, ready);
    ready.catch(() => undefined); // awaited below, and by the next layer
    landings.push(ready);
  }
  try {
    await Promise.all(landings);
    // The repository has every blob of the manifest, downloaded or not: a later push may mount from it.
    for (const [i, desc] of layers.entries()) await sources.add(diffIDs[i]!, { digest: desc.digest, size: desc.size, mediaType: desc.mediaType, repository });
  } catch (e) {
    failed = true;
    for (const b of active) b.destroy();
    for (const t of taps.values()) t.detach(); // wakes a download waiting for an applier that is gone
    await Promise.allSettled([...downloads.values(), ...landings]);
    await releaseUnpublished(s, added.sort((a, b) => b - a).map((i) => chains[i]!));
    for (const r of ingestRefs) await s.content.abortIngest(r).catch(() => undefined);
    throw e;
  } finally {
    // The compressed blobs were a vehicle: the layers hold the data now (their digests are kept in BlobSources).
    for (const d of created) await s.content.delete(d).catch(() => undefined);
  }
}
