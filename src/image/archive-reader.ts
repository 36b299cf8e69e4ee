import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { join, posix } from 'node:path';
import type { Readable } from 'node:stream';
import { decompress, detectCompression, layerMediaType, mediaTypeCompression } from '../archive/compression.js';
import { readTar, type TarEntry } from '../archive/tar/tar-reader.js';
import type { BlobInfo, ContentStore } from '../content/content-store.js';
import { corrupt, invalidArgument, isErrno, isStrataError, limit, sizeMismatch, unsupported } from '../errors.js';
import { digestHex, sha256, type Digest } from '../util/digest.js';
import { checkLayerCount, isIndex, MAX_CONFIG_SIZE, MAX_MANIFEST_SIZE, parseManifest, parseImageConfig, type Descriptor, type ImageConfig, type ImageIndex, type ImageManifest, type RawDocument } from './manifest.js';
import { isImageConfigMediaType, isIndexMediaType, isManifestMediaType } from './media-types.js';
import { selectManifest } from './platform.js';
import { familiarString, parseReference, withDefaultTag } from './reference.js';

export interface ArchiveLayer {
  /** Digest of the blob in the content store (for uncompressed layers also the diffID). */
  digest: Digest;
  size: number;
  /** From the OCI manifest when there is one, else sniffed: Docker's `.tar`, `.tar.gzip` or `.tar.zstd`. */
  mediaType: string;
}

export interface ArchiveImage {
  config: RawDocument<ImageConfig>;
  layers: ArchiveLayer[];
  /** Validated names with tags, docker's familiar form (`busybox:latest`). */
  repoTags: string[];
  /** OCI `org.opencontainers.image.ref.name` values that are a bare tag, not a name (`latest`, `v1`). */
  refNames: string[];
  manifest?: RawDocument<ImageManifest> & { mediaType: string };
}

export interface ArchiveContents {
  images: ArchiveImage[];
  /** Blobs this call added to the content store (not those it found there already). */
  blobsIngested: Digest[];
}

/** Bounds on what a stranger's archive can make us hold or do. */
const MAX_METADATA_FILE = 8 << 20;
const MAX_METADATA_TOTAL = 64 << 20;
const MAX_ENTRIES = 100_000;
const MAX_LINK_DEPTH = 8;
const MAX_INDEX_DEPTH = 4;

const ANNOTATION_REF_NAME = 'org.opencontainers.image.ref.name';
const ANNOTATION_IMAGE_NAME = 'io.containerd.image.name';
const TAG_ONLY = /^[\w][\w.-]{0,127}$/;
const BLOB_PATH = /^blobs\/sha256\/([a-f0-9]{64})$/;

/**
 * A file of the archive in the content store, with its first bytes (enough to tell a layer's compression):
 * another process loading the same archive may drop the blob once its own load is done, so what the
 * resolver needs of a blob is taken while it streams in, never read back.
 */
interface ArchiveBlob extends BlobInfo {
  head: Buffer;
}

const HEAD_BYTES = 16;

/** `body` passed through, its first HEAD_BYTES kept (and all of it when `whole`). */
function tapped(body: AsyncIterable<Buffer>, whole: boolean): { body: AsyncGenerator<Buffer>; head(): Buffer; bytes(): Buffer } {
  const parts: Buffer[] = [];
  let have = 0;
  return {
    body: (async function* () {
      for await (const c of body) {
        if (whole || have < HEAD_BYTES) {
          parts.push(Buffer.from(c));
          have += c.length;
        }
        yield c;
      }
    })(),
    head: () => Buffer.concat(parts).subarray(0, HEAD_BYTES),
    bytes: () => Buffer.concat(parts),
  };
}

/** The files of an archive, whichever form it came in. */
interface ArchiveFiles {
  has(path: string): boolean | Promise<boolean>;
  /** A metadata file or small blob, whole; ErrLimit past `max`. */
  small(path: string, max: number): Promise<Buffer>;
  /** A file's blob in the content store (verified against its name when the path is `blobs/sha256/<hex>`). */
  blob(path: string): Promise<ArchiveBlob>;
}

const missing = (path: string) => corrupt(`invalid image archive: ${path} is missing`);

/** Clean a path from an archive or from its metadata, refusing anything that could leave it. */
function cleanPath(name: string): string {
  if (name.startsWith('/')) throw corrupt(`invalid image archive: absolute path ${JSON.stringify(name)}`);
  const parts = name.split('/').filter((c) => c !== '' && c !== '.');
  if (parts.includes('..')) throw corrupt(`invalid image archive: path ${JSON.stringify(name)} contains ".."`);
  return parts.join('/');
}

const blobPath = (d: Digest) => `blobs/sha256/${digestHex(d)}`;
const expectedDigest = (path: string): Digest | undefined => {
  const m = BLOB_PATH.exec(path);
  return m ? (`sha256:${m[1]}` as Digest) : undefined;
};

/** Top-level JSON and layout files are read into memory; everything else goes to the content store. */
const isMetadata = (path: string) => !path.includes('/') && (path.endsWith('.json') || path === 'oci-layout' || path === 'repositories');
/** Docker's pre-1.10 per-layer `json` and `VERSION`: nothing current reads them. */
const isLegacyLayerMetadata = (path: string) => /^[^/]+\/(json|VERSION)$/.test(path);

async function readBounded(body: AsyncIterable<Buffer>, size: number, path: string): Promise<Buffer> {
  if (size > MAX_METADATA_FILE) throw limit(`invalid image archive: ${path} is ${size} bytes, more than the ${MAX_METADATA_FILE} allowed`);
  const parts: Buffer[] = [];
  for await (const c of body) parts.push(Buffer.from(c));
  return Buffer.concat(parts);
}

/**
 * A tar archive read in one streaming pass: each regular file goes into the content store (a `blobs/sha256/<hex>`
 * file must have that digest), small metadata files stay in memory, links are resolved afterwards.
 */
class TarArchive implements ArchiveFiles {
  private readonly files = new Map<string, ArchiveBlob>();
  private readonly metadata = new Map<string, Buffer>();
  /** Small blobs (manifests, configs) kept whole as they stream in: small() never reads the store back. */
  private readonly kept = new Map<string, Buffer>();
  private keptBytes = 0;
  private readonly links = new Map<string, string>();

  constructor(
    private readonly content: ContentStore,
    private readonly created: Digest[],
  ) {}

  async read(source: Readable): Promise<void> {
    const { stream } = await decompress(source);
    const refBase = `archive-${randomUUID()}`;
    let metadataBytes = 0;
    for await (const entry of readTar(stream, { limits: { maxEntries: MAX_ENTRIES } })) {
      const path = cleanPath(entry.header.name);
      if (path === '') continue;
      switch (entry.header.type) {
        case 'file':
          if (isMetadata(path)) {
            metadataBytes += entry.header.size;
            if (metadataBytes > MAX_METADATA_TOTAL) throw limit(`invalid image archive: more than ${MAX_METADATA_TOTAL} bytes of metadata files`);
            this.metadata.set(path, await readBounded(entry.body(), entry.header.size, path));
          } else if (!isLegacyLayerMetadata(path)) {
            this.files.set(path, await this.ingest(`${refBase}/${path}`, path, entry));
          }
          this.links.delete(path);
          break;
        case 'symlink': {
          const target = entry.header.linkname.startsWith('/') ? entry.header.linkname : posix.join(posix.dirname(path), entry.header.linkname);
          this.links.set(path, cleanPath(target));
          break;
        }
        case 'hardlink':
          this.links.set(path, cleanPath(entry.header.linkname));
          break;
        default:
          break; // directories and device nodes carry nothing an image needs
      }
    }
  }

  private async ingest(ref: string, path: string, entry: TarEntry): Promise<ArchiveBlob> {
    const digest = expectedDigest(path);
    const keep = entry.header.size <= MAX_METADATA_FILE && this.keptBytes + entry.header.size <= MAX_METADATA_TOTAL;
    const tap = tapped(entry.body(), keep);
    try {
      const r = await this.content.ingest(ref, tap.body, { size: entry.header.size, ...(digest ? { digest } : {}) });
      if (r.created) this.created.push(r.digest);
      if (keep) {
        this.kept.set(path, tap.bytes());
        this.keptBytes += r.size;
      }
      return { digest: r.digest, size: r.size, head: tap.head() };
    } catch (e) {
      await this.content.abortIngest(ref).catch(() => undefined);
      if (isStrataError(e, 'ErrDigestMismatch')) {
        throw corrupt(`invalid image archive: ${path} does not match its name: ${e.message}`);
      }
      throw e;
    }
  }

  private resolve(path: string): string {
    let p = cleanPath(path);
    for (let i = 0; i < MAX_LINK_DEPTH; i++) {
      const next = this.links.get(p);
      if (next === undefined) return p;
      p = next;
    }
    throw corrupt(`invalid image archive: too many levels of links at ${path}`);
  }

  has(path: string): boolean {
    const p = this.resolve(path);
    return this.metadata.has(p) || this.files.has(p);
  }

  async small(path: string, max: number): Promise<Buffer> {
    const p = this.resolve(path);
    const m = this.metadata.get(p);
    if (m !== undefined) {
      if (m.length > max) throw limit(`invalid image archive: ${path} is ${m.length} bytes, more than the ${max} allowed`);
      return m;
    }
    const k = this.kept.get(p);
    if (k !== undefined) {
      if (k.length > max) throw limit(`invalid image archive: ${path} is ${k.length} bytes, more than the ${max} allowed`);
      return k;
    }
    return this.content.readBytes((await this.blob(p)).digest, max);
  }

  async blob(path: string): Promise<ArchiveBlob> {
    const f = this.files.get(this.resolve(path));
    if (f === undefined) throw missing(path);
    return f;
  }
}

/** An OCI image-layout directory: files are opened without following a final symlink, blobs ingested when used. */
class DirArchive implements ArchiveFiles {
  private readonly refBase = `layout-${randomUUID()}`;
  private readonly ingested = new Map<string, ArchiveBlob>();

  constructor(
    private readonly dir: string,
    private readonly content: ContentStore,
    private readonly created: Digest[],
  ) {}

  private async openFile(path: string) {
    try {
      return await open(join(this.dir, cleanPath(path)), constants.O_RDONLY | constants.O_NOFOLLOW);
    } catch (e) {
      if (isErrno(e, 'ENOENT')) throw missing(path);
      if (isErrno(e, 'ELOOP')) throw corrupt(`invalid image layout: ${path} is a symlink`);
      throw e;
    }
  }

  async has(path: string): Promise<boolean> {
    try {
      await (await this.openFile(path)).close();
      return true;
    } catch {
      return false;
    }
  }

  async small(path: string, max: number): Promise<Buffer> {
    const fh = await this.openFile(path);
    try {
      const { size } = await fh.stat();
      if (size > max) throw limit(`invalid image layout: ${path} is ${size} bytes, more than the ${max} allowed`);
      return await fh.readFile();
    } finally {
      await fh.close();
    }
  }

  async blob(path: string): Promise<ArchiveBlob> {
    const known = this.ingested.get(path);
    if (known) return known;
    const digest = expectedDigest(cleanPath(path));
    const fh = await this.openFile(path);
    const ref = `${this.refBase}/${path}`;
    try {
      const tap = tapped(fh.createReadStream({ highWaterMark: 1 << 20 }), false);
      const r = await this.content.ingest(ref, tap.body, digest ? { digest } : {});
      if (r.created) this.created.push(r.digest);
      const info = { digest: r.digest, size: r.size, head: tap.head() };
      this.ingested.set(path, info);
      return info;
    } catch (e) {
      await this.content.abortIngest(ref).catch(() => undefined);
      throw e;
    } finally {
      await fh.close().catch(() => undefined);
    }
  }
}

function parseJson(raw: Buffer, what: string): unknown {
  try {
    return JSON.parse(raw.toString('utf8'));
  } catch (e) {
    throw corrupt(`invalid image archive: ${what} is not valid JSON: ${(e as Error).message}`);
  }
}

interface DockerManifestEntry {
  Config: string;
  RepoTags: string[];
  Layers: string[];
}

function parseDockerManifestJson(raw: Buffer): DockerManifestEntry[] {
  const v = parseJson(raw, 'manifest.json');
  if (!Array.isArray(v)) throw corrupt('invalid image archive: manifest.json is not a list');
  return v.map((e: unknown, i) => {
    const o = e as Record<string, unknown>;
    const where = `manifest.json[${i}]`;
    if (typeof o !== 'object' || o === null) throw corrupt(`invalid image archive: ${where} is not an object`);
    if (typeof o.Config !== 'string') throw corrupt(`invalid image archive: ${where} has no Config`);
    const tags = o.RepoTags ?? [];
    const layers = o.Layers ?? [];
    if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string')) throw corrupt(`invalid image archive: ${where}.RepoTags must be strings`);
    if (!Array.isArray(layers) || !layers.every((t) => typeof t === 'string')) throw corrupt(`invalid image archive: ${where}.Layers must be strings`);
    return { Config: o.Config, RepoTags: tags as string[], Layers: layers as string[] };
  });
}

/** A name an archive gives an image, as `name:tag` in docker's familiar form; digests are not tags. */
function repoTag(s: string): string {
  const ref = withDefaultTag(parseReference(s));
  if (ref.digest !== undefined) throw invalidArgument(`invalid image archive: ${JSON.stringify(s)} is a digest reference, not a tag`);
  return familiarString(ref);
}

/** Resolves an archive's metadata into images, reading blobs through `files`. */
class Resolver {
  constructor(private readonly files: ArchiveFiles) {}

  async resolve(): Promise<ArchiveImage[]> {
    if (await this.files.has('manifest.json')) return this.docker();
    if (await this.files.has('index.json')) return this.oci();
    throw invalidArgument('not an image archive: it has neither manifest.json (docker save) nor index.json (OCI layout)');
  }

  private async docker(): Promise<ArchiveImage[]> {
    const entries = parseDockerManifestJson(await this.files.small('manifest.json', MAX_METADATA_FILE));
    // Docker 25+ also writes an OCI layout; its manifests give layer media types. manifest.json stays authoritative.
    const oci = (await this.files.has('index.json')) ? await this.oci().catch(() => []) : [];
    const images: ArchiveImage[] = [];
    for (const e of entries) {
      const config = await this.config(e.Config);
      const layers = await Promise.all(e.Layers.map((p) => this.files.blob(p)));
      checkLayerCount(config.parsed, layers.length, `manifest.json entry for ${e.Config}`);
      const match = oci.find((img) => img.config.digest === config.digest && img.layers.every((l, i) => l.digest === layers[i]?.digest && l.size === layers[i]?.size));
      images.push({
        config,
        layers: match?.layers.length === layers.length ? match.layers : layers.map((l) => ({ digest: l.digest, size: l.size, mediaType: layerMediaType('docker', detectCompression(l.head)) })),
        repoTags: e.RepoTags.map(repoTag),
        refNames: [],
        ...(match?.manifest ? { manifest: match.manifest } : {}),
      });
    }
    return images;
  }

  private async config(path: string): Promise<RawDocument<ImageConfig>> {
    const raw = await this.files.small(path, MAX_CONFIG_SIZE);
    return { raw, digest: sha256(raw), parsed: parseImageConfig(raw) };
  }

  private async oci(): Promise<ArchiveImage[]> {
    if (await this.files.has('oci-layout')) {
      const layout = parseJson(await this.files.small('oci-layout', 4096), 'oci-layout') as { imageLayoutVersion?: unknown };
      if (typeof layout?.imageLayoutVersion !== 'string' || !layout.imageLayoutVersion.startsWith('1.')) {
        throw unsupported(`unsupported OCI image layout version ${JSON.stringify(layout?.imageLayoutVersion)}`);
      }
    }
    const index = parseManifest(await this.files.small('index.json', MAX_MANIFEST_SIZE));
    if (!isIndex(index.parsed)) throw corrupt('invalid image layout: index.json is not an image index');
    const byManifest = new Map<Digest, ArchiveImage>();
    for (const d of index.parsed.manifests) {
      const image = await this.descriptor(d, 0);
      const seen = byManifest.get(image.manifest!.digest);
      const target = seen ?? image;
      if (!seen) byManifest.set(image.manifest!.digest, image);
      const { repoTags, refNames } = namesOf(d);
      for (const t of repoTags) if (!target.repoTags.includes(t)) target.repoTags.push(t);
      for (const t of refNames) if (!target.refNames.includes(t)) target.refNames.push(t);
    }
    return [...byManifest.values()];
  }

  private async blobOf(d: Descriptor): Promise<BlobInfo> {
    const info = await this.files.blob(blobPath(d.digest));
    if (info.size !== d.size) throw sizeMismatch(`invalid image archive: blob ${d.digest} has ${info.size} bytes, its descriptor says ${d.size}`);
    return info;
  }

  private async document(d: Descriptor, max: number): Promise<Buffer> {
    await this.blobOf(d);
    return this.files.small(blobPath(d.digest), max);
  }

  /** An index entry down to one image: nested indexes are followed, choosing this platform's entry. */
  private async descriptor(d: Descriptor, depth: number): Promise<ArchiveImage> {
    if (isIndexMediaType(d.mediaType)) {
      if (depth >= MAX_INDEX_DEPTH) throw limit(`invalid image archive: indexes nested more than ${MAX_INDEX_DEPTH} deep`);
      const index = parseManifest(await this.document(d, MAX_MANIFEST_SIZE), d.mediaType);
      return this.descriptor(selectManifest(index.parsed as ImageIndex), depth + 1);
    }
    if (!isManifestMediaType(d.mediaType)) throw unsupported(`unsupported media type ${JSON.stringify(d.mediaType)} in image index: not an image`);
    const doc = parseManifest(await this.document(d, MAX_MANIFEST_SIZE), d.mediaType);
    const m = doc.parsed as ImageManifest;
    if (!isImageConfigMediaType(m.config.mediaType)) {
      throw unsupported(`unsupported config media type ${JSON.stringify(m.config.mediaType)}: ${d.digest} is not a container image`);
    }
    await this.blobOf(m.config);
    const config = await this.config(blobPath(m.config.digest));
    const layers: ArchiveLayer[] = [];
    for (const l of m.layers) {
      mediaTypeCompression(l.mediaType); // ErrUnsupported for anything that is not a layer tar
      const info = await this.blobOf(l);
      layers.push({ ...info, mediaType: l.mediaType });
    }
    checkLayerCount(config.parsed, layers.length, `manifest ${d.digest}`);
    return { config, layers, repoTags: [], refNames: [], manifest: { raw: doc.raw, digest: doc.digest, parsed: m, mediaType: m.mediaType } };
  }
}

/** Names from an index entry's annotations: containerd's full image name, and the OCI ref name (a tag or a name). */
function namesOf(d: Descriptor): { repoTags: string[]; refNames: string[] } {
  const repoTags: string[] = [];
  const refNames: string[] = [];
  const full = d.annotations?.[ANNOTATION_IMAGE_NAME];
  if (full !== undefined) repoTags.push(repoTag(full));
  const refName = d.annotations?.[ANNOTATION_REF_NAME];
  if (refName !== undefined) {
    if (TAG_ONLY.test(refName)) refNames.push(refName);
    else if (full === undefined) repoTags.push(repoTag(refName));
  }
  return { repoTags, refNames };
}

/**
 * Read an image archive: a `docker save` tar (legacy or Docker 25+'s combined OCI layout), an OCI image-layout tar
 * (either possibly compressed as a whole), or an OCI image-layout directory. Blobs go into `content`, verified; the
 * result says which images the archive holds and where their layers are.
 *
 * On failure the blobs this call added are deleted again and the unfinished ingest is aborted, so the store is left
 * as it was, bar blobs another operation added meanwhile.
 */
export async function readImageArchive(source: Readable | { dir: string }, content: ContentStore): Promise<ArchiveContents> {
  const created: Digest[] = [];
  try {
    let files: ArchiveFiles;
    if ('dir' in source && typeof source.dir === 'string') {
      files = new DirArchive(source.dir, content, created);
    } else {
      const tar = new TarArchive(content, created);
      await tar.read(source as Readable);
      files = tar;
    }
    const images = await new Resolver(files).resolve();
    return { images, blobsIngested: [...new Set(created)] };
  } catch (e) {
    for (const d of created) await content.delete(d).catch(() => undefined);
    throw e;
  }
}
