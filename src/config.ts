import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { invalidArgument, isErrno, notFound } from './errors.js';

/** The settings an Engine runs with, after flags, environment and the config file were merged. */
export interface EngineConfig {
  dataRoot: string;
  /** Unset: chosen like Docker (prior state, then the priority list). */
  storageDriver?: string;
  storageOpts: Record<string, string>;
  registry: RegistryConfig;
}

/** How pull and push reach registries (daemon.json keys of the same names). */
export interface RegistryConfig {
  /** Hosts (`host[:port]`) or CIDRs reached over plain HTTP or unverified TLS; 127.0.0.0/8 and localhost always are, as in Docker. */
  insecureRegistries: string[];
  /** Mirrors of Docker Hub (`https://mirror.example`), tried in order before docker.io. */
  registryMirrors: string[];
  maxConcurrentDownloads: number;
  maxConcurrentUploads: number;
}

/** What the user said, each source optional: flags win over the environment, which wins over the file. */
export interface ConfigSources {
  dataRoot?: string;
  storageDriver?: string;
  storageOpts?: string[];
  configFile?: string;
  env?: NodeJS.ProcessEnv;
}

/** The daemon.json keys strata reads; unknown keys are ignored as belonging to other issues' features. */
interface DaemonJson {
  'data-root'?: string;
  'storage-driver'?: string;
  'storage-opts'?: string[];
  'insecure-registries'?: string[];
  'registry-mirrors'?: string[];
  'max-concurrent-downloads'?: number;
  'max-concurrent-uploads'?: number;
}

export function defaultDataRoot(env: NodeJS.ProcessEnv = process.env): string {
  if ((process.getuid?.() ?? 1) === 0) return '/var/lib/strata';
  const xdg = env.XDG_DATA_HOME;
  return join(xdg && xdg !== '' ? xdg : join(homedir(), '.local', 'share'), 'strata');
}

/** `key=value` storage options, as dockerd's `--storage-opt` takes them. */
export function parseStorageOpts(opts: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const o of opts) {
    const eq = o.indexOf('=');
    if (eq <= 0) throw invalidArgument(`invalid storage option "${o}": want key=value`);
    out[o.slice(0, eq).trim().toLowerCase()] = o.slice(eq + 1).trim();
  }
  return out;
}

function readDaemonJson(path: string): DaemonJson {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    if (isErrno(e, 'ENOENT')) throw notFound(`config file ${path} not found`);
    throw e;
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw invalidArgument(`config file ${path} is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw invalidArgument(`config file ${path}: want a JSON object`);
  const j = parsed as Record<string, unknown>;
  const str = (k: string) => {
    if (j[k] !== undefined && typeof j[k] !== 'string') throw invalidArgument(`config file ${path}: "${k}" must be a string`);
    return j[k] as string | undefined;
  };
  const strings = (k: string) => {
    const v = j[k];
    if (v !== undefined && !(Array.isArray(v) && v.every((o) => typeof o === 'string'))) throw invalidArgument(`config file ${path}: "${k}" must be an array of strings`);
    return v as string[] | undefined;
  };
  const count = (k: string) => {
    const v = j[k];
    if (v !== undefined && !(typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 64)) throw invalidArgument(`config file ${path}: "${k}" must be an integer from 1 to 64`);
    return v as number | undefined;
  };
  return {
    'data-root': str('data-root'),
    'storage-driver': str('storage-driver'),
    'storage-opts': strings('storage-opts'),
    'insecure-registries': strings('insecure-registries'),
    'registry-mirrors': strings('registry-mirrors'),
    'max-concurrent-downloads': count('max-concurrent-downloads'),
    'max-concurrent-uploads': count('max-concurrent-uploads'),
  };
}

export function resolveConfig(src: ConfigSources = {}): EngineConfig {
  const env = src.env ?? process.env;
  const file = src.configFile !== undefined ? readDaemonJson(src.configFile) : {};
  const dataRoot = src.dataRoot ?? (env.STRATA_DATA_ROOT || undefined) ?? file['data-root'] ?? defaultDataRoot(env);
  return {
    dataRoot: resolve(dataRoot),
    storageDriver: src.storageDriver ?? file['storage-driver'],
    storageOpts: parseStorageOpts(src.storageOpts ?? file['storage-opts'] ?? []),
    registry: {
      insecureRegistries: file['insecure-registries'] ?? [],
      registryMirrors: file['registry-mirrors'] ?? [],
      maxConcurrentDownloads: file['max-concurrent-downloads'] ?? 3,
      maxConcurrentUploads: file['max-concurrent-uploads'] ?? 5,
    },
  };
}
