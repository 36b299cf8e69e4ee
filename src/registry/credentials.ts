import { mkdir, readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { corrupt, isErrno } from '../errors.js';
import { writeFileAtomic } from '../util/atomic.js';
import { withFileLock } from '../util/lock.js';

export interface Credentials {
  username: string;
  password: string;
}

/** The key Docker files Docker Hub's credentials under. */
export const DOCKER_HUB_AUTH_KEY = 'https://index.docker.io/v1/';

/** strata's own client config (written by `login`): `$STRATA_CONFIG/config.json`, else `~/.strata/config.json`. */
export function strataConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.STRATA_CONFIG || join(homedir(), '.strata'), 'config.json');
}

/** Docker's client config, read as a fallback: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`. */
export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.DOCKER_CONFIG || join(homedir(), '.docker'), 'config.json');
}

/** The `auths` key for a registry host: Docker Hub has its legacy URL, others their `host[:port]`. */
export function authKey(host: string): string {
  return host === 'docker.io' || host === 'index.docker.io' || host === 'registry-1.docker.io' ? DOCKER_HUB_AUTH_KEY : host;
}

/** `https://host:port/v1/` and `host:port` name the same registry in an `auths` map. */
function keyHost(key: string): string {
  return key.replace(/^[a-z]+:\/\//, '').replace(/\/.*$/, '');
}

type ConfigJson = { auths?: Record<string, { auth?: string; username?: string; password?: string }> } & Record<string, unknown>;

async function readConfig(path: string): Promise<ConfigJson> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return {};
    throw e;
  }
  try {
    const v = JSON.parse(text) as unknown;
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new Error('not a JSON object');
    return v as ConfigJson;
  } catch (e) {
    throw corrupt(`client config ${path} is not valid: ${(e as Error).message}`);
  }
}

function decode(entry: { auth?: string; username?: string; password?: string }): Credentials | undefined {
  if (entry.auth) {
    const text = Buffer.from(entry.auth, 'base64').toString('utf8');
    const colon = text.indexOf(':');
    if (colon > 0) return { username: text.slice(0, colon), password: text.slice(colon + 1) };
  }
  if (entry.username && entry.password !== undefined) return { username: entry.username, password: entry.password };
  return undefined;
}

/**
 * Registry credentials in Docker's `auths` format (`{"auths": {"host": {"auth": base64("user:pass")}}}`):
 * looked up in strata's config, then Docker's; `login`/`logout` change strata's only.
 */
export class CredentialStore {
  constructor(
    readonly path = strataConfigPath(),
    private readonly fallbacks: string[] = [dockerConfigPath()],
  ) {}

  async get(host: string): Promise<Credentials | undefined> {
    const want = keyHost(authKey(host));
    for (const path of [this.path, ...this.fallbacks]) {
      const auths = (await readConfig(path)).auths ?? {};
      for (const [key, entry] of Object.entries(auths)) {
        if (keyHost(key) === want && entry) {
          const c = decode(entry);
          if (c) return c;
        }
      }
    }
    return undefined;
  }

  async set(host: string, c: Credentials): Promise<void> {
    await this.update((auths) => {
      auths[authKey(host)] = { auth: Buffer.from(`${c.username}:${c.password}`).toString('base64') };
    });
  }

  /** Returns whether strata's config had credentials for the host. */
  async remove(host: string): Promise<boolean> {
    const want = keyHost(authKey(host));
    return this.update((auths) => {
      let found = false;
      for (const key of Object.keys(auths)) {
        if (keyHost(key) === want) {
          delete auths[key];
          found = true;
        }
      }
      return found;
    });
  }

  private async update<T>(fn: (auths: NonNullable<ConfigJson['auths']>) => T): Promise<T> {
    await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
    return withFileLock(`${this.path}.lock`, async () => {
      const config = await readConfig(this.path);
      const auths = (config.auths ??= {});
      const out = fn(auths);
      await writeFileAtomic(this.path, JSON.stringify(config, null, '\t') + '\n', 0o600);
      return out;
    });
  }
}
