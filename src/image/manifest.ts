import { corrupt, limit, unsupported } from '../errors.js';
import { isDigest, sha256, type Digest } from '../util/digest.js';
import { isIndexMediaType, isManifestMediaType, isSchema1MediaType, MediaType } from './media-types.js';
import type { Platform } from './platform.js';

/** Registries refuse manifests over 4 MiB; so do we, before parsing a stranger's JSON. */
export const MAX_MANIFEST_SIZE = 4 << 20;
/** Configs carry history and env; bounded too, more generously. */
export const MAX_CONFIG_SIZE = 8 << 20;

/** A document as stored: its bytes (what the digest is of), the digest, and the parsed structure. */
export interface RawDocument<T> {
  raw: Buffer;
  digest: Digest;
  parsed: T;
}

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: Platform;
  artifactType?: string;
  /** Embedded content, base64. */
  data?: string;
}

/** OCI image manifest or Docker schema 2 manifest (same shape). */
export interface ImageManifest {
  schemaVersion: 2;
  mediaType: string;
  artifactType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

/** OCI image index or Docker manifest list (same shape). */
export interface ImageIndex {
  schemaVersion: 2;
  mediaType: string;
  artifactType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  annotations?: Record<string, string>;
}

export type Manifest = ImageManifest | ImageIndex;

export function isIndex(m: Manifest): m is ImageIndex {
  return isIndexMediaType(m.mediaType);
}

/** Docker's container.Config as an image config carries it (the fields docker uses; unknown keys are kept). */
export interface ContainerConfig {
  Hostname?: string;
  Domainname?: string;
  User?: string;
  AttachStdin?: boolean;
  AttachStdout?: boolean;
  AttachStderr?: boolean;
  ExposedPorts?: Record<string, object>;
  Tty?: boolean;
  OpenStdin?: boolean;
  StdinOnce?: boolean;
  Env?: string[];
  Cmd?: string[];
  Healthcheck?: { Test?: string[]; Interval?: number; Timeout?: number; StartPeriod?: number; StartInterval?: number; Retries?: number };
  ArgsEscaped?: boolean;
  Image?: string;
  Volumes?: Record<string, object>;
  WorkingDir?: string;
  Entrypoint?: string[];
  NetworkDisabled?: boolean;
  MacAddress?: string;
  OnBuild?: string[];
  Labels?: Record<string, string>;
  StopSignal?: string;
  StopTimeout?: number;
  Shell?: string[];
}

export interface HistoryEntry {
  created?: string;
  created_by?: string;
  author?: string;
  comment?: string;
  empty_layer?: boolean;
}

/** OCI image config / Docker image JSON. */
export interface ImageConfig {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
  created?: string;
  author?: string;
  config?: ContainerConfig;
  /** Docker-only fields kept for `inspect`. */
  container?: string;
  container_config?: ContainerConfig;
  docker_version?: string;
  rootfs: { type: 'layers'; diff_ids: Digest[] };
  history?: HistoryEntry[];
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');
const isStringMap = (v: unknown): v is Record<string, string> => isObject(v) && Object.values(v).every((x) => typeof x === 'string');

function parseJsonObject(raw: Buffer, what: string, max: number): Json {
  if (raw.length > max) throw limit(`${what} is ${raw.length} bytes, more than the ${max} allowed`);
  let v: unknown;
  try {
    v = JSON.parse(raw.toString('utf8'));
  } catch (e) {
    throw corrupt(`${what} is not valid JSON: ${(e as Error).message}`);
  }
  if (!isObject(v)) throw corrupt(`${what} is not a JSON object`);
  return v;
}

export function parseDescriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) throw corrupt(`${where}: descriptor is not an object`);
  const { mediaType, digest, size } = v;
  if (typeof mediaType !== 'string' || mediaType === '') throw corrupt(`${where}: descriptor has no mediaType`);
  if (typeof digest !== 'string' || !isDigest(digest)) throw corrupt(`${where}: invalid digest ${JSON.stringify(digest)}`);
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) throw corrupt(`${where}: invalid size ${JSON.stringify(size)}`);
  if (v.urls !== undefined && !isStringArray(v.urls)) throw corrupt(`${where}: urls must be strings`);
  if (v.annotations !== undefined && !isStringMap(v.annotations)) throw corrupt(`${where}: annotations must map strings to strings`);
  if (v.artifactType !== undefined && typeof v.artifactType !== 'string') throw corrupt(`${where}: artifactType must be a string`);
  if (v.data !== undefined && typeof v.data !== 'string') throw corrupt(`${where}: data must be base64 text`);
  if (v.platform !== undefined) {
    const p = v.platform;
    if (!isObject(p) || typeof p.os !== 'string' || typeof p.architecture !== 'string') throw corrupt(`${where}: platform needs os and architecture`);
    if (p.variant !== undefined && typeof p.variant !== 'string') throw corrupt(`${where}: platform variant must be a string`);
  }
  return v as unknown as Descriptor;
}

/** The media type a document's structure says it is, given what it declares in its own `mediaType`. */
function structuralMediaType(v: Json, declared: string | undefined): string {
  const own = v.mediaType;
  if (own !== undefined && typeof own !== 'string') throw corrupt('manifest mediaType must be a string');
  const ownOrDeclared = own ?? declared;
  if (v.schemaVersion === 1 || 'fsLayers' in v || (ownOrDeclared !== undefined && isSchema1MediaType(ownOrDeclared))) {
    throw unsupported('Docker image manifest schema 1 is not supported (deprecated since 2017): re-push the image with a current client');
  }
  if (v.schemaVersion !== 2) throw corrupt(`unsupported manifest schemaVersion ${JSON.stringify(v.schemaVersion)}`);
  const looksIndex = Array.isArray(v.manifests);
  const looksManifest = 'config' in v || Array.isArray(v.layers);
  if (looksIndex === looksManifest) throw corrupt('manifest is neither an image manifest (config, layers) nor an index (manifests)');
  if (own !== undefined) {
    if (looksIndex ? !isIndexMediaType(own) : !isManifestMediaType(own)) {
      throw unsupported(`unsupported manifest media type ${JSON.stringify(own)} for ${looksIndex ? 'an index' : 'an image manifest'}`);
    }
    return own;
  }
  // Without its own field the content is OCI: Docker's schema 2 types always carry mediaType.
  return looksIndex ? MediaType.ociIndex : MediaType.ociManifest;
}

/**
 * Parse and validate an image manifest or index. The media type comes from the content (its `mediaType`, else its
 * shape); a declared one (a registry's Content-Type, a parent descriptor's) must agree with it.
 */
export function parseManifest(raw: Buffer, declaredMediaType?: string): RawDocument<Manifest> {
  const v = parseJsonObject(raw, 'manifest', MAX_MANIFEST_SIZE);
  const mediaType = structuralMediaType(v, declaredMediaType);
  if (declaredMediaType !== undefined && declaredMediaType !== mediaType) {
    throw corrupt(`manifest declared as ${declaredMediaType} but its content is ${mediaType}`);
  }
  const optional = (key: 'subject') => (v[key] === undefined ? undefined : parseDescriptor(v[key], `manifest ${key}`));
  if (v.annotations !== undefined && !isStringMap(v.annotations)) throw corrupt('manifest annotations must map strings to strings');
  if (v.artifactType !== undefined && typeof v.artifactType !== 'string') throw corrupt('manifest artifactType must be a string');
  const common = {
    schemaVersion: 2 as const,
    mediaType,
    ...(v.artifactType !== undefined ? { artifactType: v.artifactType as string } : {}),
    ...(v.subject !== undefined ? { subject: optional('subject') } : {}),
    ...(v.annotations !== undefined ? { annotations: v.annotations as Record<string, string> } : {}),
  };
  let parsed: Manifest;
  if (isIndexMediaType(mediaType)) {
    const manifests = (v.manifests as unknown[]).map((d, i) => parseDescriptor(d, `index manifests[${i}]`));
    parsed = { ...common, manifests };
  } else {
    if (!Array.isArray(v.layers)) throw corrupt('image manifest has no layers array');
    const config = parseDescriptor(v.config, 'manifest config');
    const layers = v.layers.map((d, i) => parseDescriptor(d, `manifest layers[${i}]`));
    parsed = { ...common, config, layers };
  }
  return { raw, digest: sha256(raw), parsed };
}

const configStringFields = ['Hostname', 'Domainname', 'User', 'Image', 'WorkingDir', 'MacAddress', 'StopSignal'] as const;
const configListFields = ['Env', 'Cmd', 'Entrypoint', 'OnBuild', 'Shell'] as const;
const configSetFields = ['ExposedPorts', 'Volumes'] as const;

/** Type-check a container config; Docker writes `null` for empty lists and maps, which we drop. */
function parseContainerConfig(v: unknown, where: string): ContainerConfig | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw corrupt(`image config: ${where} is not an object`);
  const c: Json = { ...v };
  for (const [k, val] of Object.entries(c)) if (val === null) delete c[k];
  for (const k of configStringFields) if (c[k] !== undefined && typeof c[k] !== 'string') throw corrupt(`image config: ${where}.${k} must be a string`);
  for (const k of configListFields) if (c[k] !== undefined && !isStringArray(c[k])) throw corrupt(`image config: ${where}.${k} must be a list of strings`);
  for (const k of configSetFields) if (c[k] !== undefined && !isObject(c[k])) throw corrupt(`image config: ${where}.${k} must be an object`);
  if (c.Labels !== undefined && !isStringMap(c.Labels)) throw corrupt(`image config: ${where}.Labels must map strings to strings`);
  return c as ContainerConfig;
}

/** Parse and validate an image config (OCI or Docker): platform strings, rootfs of digests, history entries. */
export function parseImageConfig(raw: Buffer): ImageConfig {
  const v = parseJsonObject(raw, 'image config', MAX_CONFIG_SIZE);
  for (const k of ['architecture', 'os'] as const) {
    if (typeof v[k] !== 'string' || v[k] === '') throw corrupt(`image config has no ${k}`);
  }
  for (const k of ['variant', 'os.version', 'created', 'author', 'container', 'docker_version'] as const) {
    if (v[k] !== undefined && typeof v[k] !== 'string') throw corrupt(`image config: ${k} must be a string`);
  }
  const rootfs = v.rootfs;
  if (!isObject(rootfs) || rootfs.type !== 'layers') throw corrupt('image config: rootfs.type must be "layers"');
  const diffIds = rootfs.diff_ids ?? [];
  if (!Array.isArray(diffIds)) throw corrupt('image config: rootfs.diff_ids must be a list');
  diffIds.forEach((d, i) => {
    if (typeof d !== 'string' || !isDigest(d)) throw corrupt(`image config: rootfs.diff_ids[${i}] is not a sha256 digest: ${JSON.stringify(d)}`);
  });
  const history = v.history ?? undefined;
  if (history !== undefined) {
    if (!Array.isArray(history)) throw corrupt('image config: history must be a list');
    history.forEach((h, i) => {
      if (!isObject(h)) throw corrupt(`image config: history[${i}] is not an object`);
      for (const k of ['created', 'created_by', 'author', 'comment'] as const) {
        if (h[k] !== undefined && typeof h[k] !== 'string') throw corrupt(`image config: history[${i}].${k} must be a string`);
      }
      if (h.empty_layer !== undefined && typeof h.empty_layer !== 'boolean') throw corrupt(`image config: history[${i}].empty_layer must be a boolean`);
    });
  }
  const out: Json = { ...v, rootfs: { ...rootfs, type: 'layers', diff_ids: diffIds } };
  if (history === undefined) delete out.history;
  const config = parseContainerConfig(v.config, 'config');
  if (config === undefined) delete out.config;
  else out.config = config;
  const cc = parseContainerConfig(v.container_config, 'container_config');
  if (cc === undefined) delete out.container_config;
  else out.container_config = cc;
  return out as unknown as ImageConfig;
}

/** Check a config's layer count against its manifest's, the one invariant linking them. */
export function checkLayerCount(config: ImageConfig, layers: number, where: string): void {
  const n = config.rootfs.diff_ids.length;
  if (n !== layers) throw corrupt(`${where}: config has ${n} diff_ids but there are ${layers} layers`);
}

/** A descriptor for a blob we hold the bytes of. */
export function descriptorOf(mediaType: string, raw: Buffer): Descriptor {
  return { mediaType, digest: sha256(raw), size: raw.length };
}
