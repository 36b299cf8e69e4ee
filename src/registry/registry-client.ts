import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { StrataError, corrupt, digestMismatch, limit, notFound } from '../errors.js';
import { sha256, type Digest } from '../util/digest.js';
import { MAX_MANIFEST_SIZE } from '../image/manifest.js';
import { MediaType } from '../image/media-types.js';
import { parseChallenges, type Challenge } from './auth-challenge.js';
import type { CredentialStore, Credentials } from './credentials.js';
import { drain, httpRequest, NetworkError, readBody, type HttpResponse } from './http-transport.js';
import type { RegistryEndpoint } from './registry-endpoint.js';

/** What a pull accepts, in order of preference (schema 1 is left out: registries then convert or refuse). */
export const MANIFEST_ACCEPT = [MediaType.ociIndex, MediaType.dockerManifestList, MediaType.ociManifest, MediaType.dockerManifest].join(', ');

const MAX_ATTEMPTS = 5;
const MAX_REDIRECTS = 5;
const MAX_RETRY_AFTER_MS = 30_000;
const RETRY_STATUSES = new Set([408, 429, 500, 502, 503, 504]);
const MAX_ERROR_BODY = 64 << 10;
const MAX_TOKEN_BODY = 1 << 20;

export interface FetchedManifest {
  raw: Buffer;
  digest: Digest;
  /** The Content-Type the registry gave, when it is a manifest type. */
  mediaType?: string;
}

/** Insecure registries' schemes, settled once per process by a ping (https first, then plain http). */
const settledBase = new Map<string, URL>();

interface SendOptions {
  headers?: Record<string, string>;
  /** A retryable body: a buffer, or a factory giving a fresh stream per attempt. */
  body?: Buffer | (() => Readable);
  /** Follow redirects (blob downloads); Authorization is never sent to another origin. */
  follow?: boolean;
}

/**
 * A Distribution v2 client for one repository: ping and challenge handling (Bearer tokens with scope, Basic),
 * retries with backoff on 5xx/408/429 honouring Retry-After and on broken connections, redirects.
 */
export class RegistryClient {
  private challenge: Challenge | null | undefined;
  private credentials: Credentials | undefined | null = null;
  private token: { scopes: string; value: string } | undefined;
  private readonly scopes = new Set<string>();

  constructor(
    readonly endpoint: RegistryEndpoint,
    readonly repository: string,
    private readonly creds: CredentialStore,
    actions: 'pull' | 'pull,push',
    private readonly explicit?: Credentials,
  ) {
    this.scopes.add(`repository:${repository}:${actions}`);
  }

  private get base(): URL {
    return settledBase.get(this.endpoint.base.host) ?? this.endpoint.base;
  }

  private url(path: string): URL {
    return new URL(`/v2/${this.repository}/${path}`, this.base);
  }

  private async getCredentials(): Promise<Credentials | undefined> {
    if (this.explicit) return this.explicit;
    if (this.credentials === null) this.credentials = await this.creds.get(this.endpoint.name);
    return this.credentials;
  }

  /** GET /v2/: settles the scheme of an insecure registry and learns how it wants us to authenticate. */
  async ping(): Promise<void> {
    if (this.challenge !== undefined) return;
    let res: HttpResponse;
    const ep = this.endpoint;
    if (ep.insecure && ep.base.protocol === 'https:' && !settledBase.has(ep.base.host)) {
      try {
        res = await httpRequest(new URL('/v2/', ep.base), { method: 'GET', insecureTls: true });
        settledBase.set(ep.base.host, ep.base);
      } catch (e) {
        if (!(e instanceof NetworkError) || e.errno === 'ENOTFOUND') throw e;
        const plain = new URL(`http://${ep.base.host}`);
        res = await this.withRetries(() => httpRequest(new URL('/v2/', plain), { method: 'GET' }));
        settledBase.set(ep.base.host, plain);
      }
    } else {
      res = await this.withRetries(() => httpRequest(new URL('/v2/', this.base), { method: 'GET', insecureTls: ep.insecure }));
    }
    drain(res);
    this.challenge = res.status === 401 ? (parseChallenges(res.headers['www-authenticate']).find((c) => c.scheme === 'bearer' || c.scheme === 'basic') ?? null) : null;
    if (res.status === 401 && this.challenge === null) throw new StrataError('ErrUnauthorized', `${ep.name} wants an authentication scheme strata does not speak`);
  }

  /** Network retries around one request (no HTTP status handling). */
  private async withRetries(fn: () => Promise<HttpResponse>): Promise<HttpResponse> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (e) {
        if (!(e instanceof NetworkError) || !e.transient || attempt >= 3) throw e;
        await sleep(backoff(attempt));
      }
    }
  }

  private async bearerToken(): Promise<string> {
    const scopes = [...this.scopes].sort().join(' ');
    if (this.token?.scopes === scopes) return this.token.value;
    const params = this.challenge!.params;
    if (!params.realm) throw new StrataError('ErrUnauthorized', `${this.endpoint.name} sent a Bearer challenge without a realm`);
    let realm: URL;
    try {
      realm = new URL(params.realm);
    } catch {
      throw new StrataError('ErrUnauthorized', `${this.endpoint.name} sent an invalid token realm ${JSON.stringify(params.realm)}`);
    }
    if (params.service) realm.searchParams.set('service', params.service);
    for (const s of this.scopes) realm.searchParams.append('scope', s);
    const c = await this.getCredentials();
    const headers: Record<string, string> = {};
    if (c) {
      headers.authorization = `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
      realm.searchParams.set('account', c.username);
    }
    const res = await this.withRetries(() => httpRequest(realm, { method: 'GET', headers, insecureTls: this.endpoint.insecure }));
    if (res.status !== 200) throw await statusError(res, `token request to ${realm.host}`, c !== undefined);
    const body = await readBody(res, MAX_TOKEN_BODY, 'token response');
    let value: unknown;
    try {
      const j = JSON.parse(body.toString('utf8')) as { token?: unknown; access_token?: unknown };
      value = j.token ?? j.access_token;
    } catch {
      value = undefined;
    }
    if (typeof value !== 'string' || value === '') throw new StrataError('ErrUnauthorized', `token service ${realm.host} returned no token`);
    this.token = { scopes, value };
    return value;
  }

  private async authorization(): Promise<string | undefined> {
    await this.ping();
    if (!this.challenge) return undefined;
    if (this.challenge.scheme === 'basic') {
      const c = await this.getCredentials();
      return c ? `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}` : undefined;
    }
    return `Bearer ${await this.bearerToken()}`;
  }

  /** Ask for more access (a mount needs pull on the source repository); the next request fetches a new token. */
  addScope(scope: string): void {
    this.scopes.add(scope);
  }

  /**
   * One request with everything around it: authentication (one re-challenge on 401), redirects, and retries with
   * exponential backoff on network failures and on 408/429/5xx, waiting as long as Retry-After says (capped).
   */
  async send(method: string, target: string | URL, opts: SendOptions = {}): Promise<HttpResponse> {
    await this.ping();
    let url = typeof target === 'string' ? this.url(target) : target;
    let reauthed = false;
    let redirects = 0;
    for (let attempt = 1; ; ) {
      const sameOrigin = url.origin === this.base.origin;
      const auth = sameOrigin ? await this.authorization() : undefined;
      const headers: Record<string, string> = { ...opts.headers };
      if (auth) headers.authorization = auth;
      const body = typeof opts.body === 'function' ? opts.body() : opts.body;
      let res: HttpResponse;
      try {
        res = await httpRequest(url, { method, headers, body, insecureTls: this.endpoint.insecure });
      } catch (e) {
        if (e instanceof NetworkError && e.transient && attempt < MAX_ATTEMPTS) {
          await sleep(backoff(attempt++));
          continue;
        }
        throw e;
      }
      if (res.status === 401 && sameOrigin && !reauthed) {
        const ch = parseChallenges(res.headers['www-authenticate']).find((c) => c.scheme === 'bearer' || c.scheme === 'basic');
        if (ch) {
          drain(res);
          reauthed = true;
          this.challenge = ch;
          if (ch.scheme === 'bearer' && ch.params.scope) for (const s of ch.params.scope.split(' ')) this.scopes.add(s);
          this.token = undefined;
          continue;
        }
      }
      if (opts.follow && [301, 302, 303, 307, 308].includes(res.status) && res.headers.location) {
        drain(res);
        if (++redirects > MAX_REDIRECTS) throw new StrataError('ErrUnavailable', `${this.endpoint.name}: too many redirects`);
        url = new URL(res.headers.location, url);
        continue;
      }
      if (RETRY_STATUSES.has(res.status) && attempt < MAX_ATTEMPTS) {
        drain(res);
        await sleep(retryAfter(res) ?? backoff(attempt));
        attempt++;
        continue;
      }
      return res;
    }
  }

  /** A manifest by tag or digest, bounded to 4 MiB (refused before reading when the length says so) and digest-checked. */
  async getManifest(reference: string): Promise<FetchedManifest> {
    const res = await this.send('GET', `manifests/${reference}`, { headers: { accept: MANIFEST_ACCEPT } });
    if (res.status !== 200) throw await statusError(res, `manifest ${reference}`);
    let raw: Buffer;
    try {
      raw = await readBody(res, MAX_MANIFEST_SIZE, `manifest ${reference}`);
    } catch (e) {
      if (e instanceof StrataError && e.code === 'ErrLimit') throw limit(`${e.message} (registries refuse manifests over 4 MiB)`);
      throw e;
    }
    const digest = sha256(raw);
    if (reference.startsWith('sha256:') && digest !== reference) throw digestMismatch(`manifest ${reference} has digest ${digest}`);
    const header = res.headers['docker-content-digest'];
    if (typeof header === 'string' && header.startsWith('sha256:') && header !== digest) {
      throw digestMismatch(`manifest ${reference}: the registry says its digest is ${header} but its content has ${digest}`);
    }
    const ct = (res.headers['content-type'] ?? '').split(';')[0]!.trim();
    const known = Object.values(MediaType) as string[];
    return { raw, digest, ...(known.includes(ct) ? { mediaType: ct } : {}) };
  }

  /** A blob's bytes from `offset` on: `start` is where the returned body begins (0 when the registry ignored Range). */
  async getBlob(digest: Digest, offset = 0): Promise<{ body: Readable; start: number; total?: number }> {
    const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
    const res = await this.send('GET', `blobs/${digest}`, { headers, follow: true });
    if (res.status === 206 && offset > 0) {
      const m = /^bytes (\d+)-\d+\/(\d+|\*)$/.exec(String(res.headers['content-range'] ?? ''));
      if (!m || Number(m[1]) !== offset) {
        res.body.destroy();
        throw corrupt(`blob ${digest}: the registry answered a range request with ${JSON.stringify(res.headers['content-range'])}`);
      }
      return { body: res.body, start: offset };
    }
    if (res.status === 200) return { body: res.body, start: 0 };
    if (res.status === 416 && offset > 0) {
      drain(res);
      return this.getBlob(digest, 0);
    }
    throw await statusError(res, `blob ${digest}`);
  }

  /** The blob's size when the repository has it, null when not. */
  async headBlob(digest: Digest): Promise<number | null> {
    const res = await this.send('HEAD', `blobs/${digest}`, { follow: true });
    if (res.status !== 200 && res.status !== 404) throw await statusError(res, `blob ${digest}`);
    drain(res);
    return res.status === 200 ? Number(res.headers['content-length'] ?? -1) : null;
  }

  /** Cross-repository mount; true when the registry linked the blob, false when an upload is needed. */
  async mountBlob(digest: Digest, from: string): Promise<boolean> {
    this.addScope(`repository:${from}:pull`);
    const res = await this.send('POST', `blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(from)}`, { headers: { 'content-length': '0' } });
    if (res.status !== 201 && res.status !== 202) throw await statusError(res, `mount of blob ${digest} from ${from}`);
    drain(res);
    if (res.status === 201) return true;
    {
      // The registry opened an upload instead: cancel it, the caller uploads in its own session.
      const loc = res.headers.location;
      if (loc) await this.send('DELETE', new URL(loc, this.base)).then(drain, () => undefined);
      return false;
    }
  }

  /**
   * Upload a blob: monolithic (one PUT) when it fits in `chunkSize`, else chunked PATCHes with Content-Range and a
   * closing PUT. `open(offset)` gives the bytes from an offset, so a failed chunk can be sent again.
   */
  async uploadBlob(digest: Digest, size: number, open: (offset: number, length: number) => Readable, chunkSize: number, onProgress?: (sent: number) => void): Promise<void> {
    const start = await this.send('POST', 'blobs/uploads/', { headers: { 'content-length': '0' } });
    if (start.status !== 202 || !start.headers.location) throw await statusError(start, `upload of blob ${digest}`);
    drain(start);
    let location = new URL(start.headers.location, this.base);
    const withDigest = (u: URL) => {
      const out = new URL(u);
      out.searchParams.set('digest', digest);
      return out;
    };
    if (size <= chunkSize) {
      const res = await this.send('PUT', withDigest(location), { headers: { 'content-type': 'application/octet-stream', 'content-length': String(size) }, body: () => open(0, size) });
      if (res.status !== 201) throw await statusError(res, `upload of blob ${digest}`);
      drain(res);
      onProgress?.(size);
      return;
    }
    for (let offset = 0; offset < size; offset += chunkSize) {
      const length = Math.min(chunkSize, size - offset);
      const res = await this.send('PATCH', location, {
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(length), 'content-range': `${offset}-${offset + length - 1}` },
        body: () => open(offset, length),
      });
      if (res.status !== 202 || !res.headers.location) throw await statusError(res, `upload of blob ${digest}`);
      drain(res);
      location = new URL(res.headers.location, this.base);
      onProgress?.(offset + length);
    }
    const res = await this.send('PUT', withDigest(location), { headers: { 'content-length': '0' } });
    if (res.status !== 201) throw await statusError(res, `upload of blob ${digest}`);
    drain(res);
  }

  /** PUT a manifest by tag or digest; returns the digest the registry reports (or ours). */
  async putManifest(reference: string, raw: Buffer, mediaType: string): Promise<Digest> {
    const res = await this.send('PUT', `manifests/${reference}`, { headers: { 'content-type': mediaType }, body: raw });
    if (res.status !== 201 && res.status !== 200) throw await statusError(res, `manifest ${reference}`);
    drain(res);
    return sha256(raw);
  }

  /** `login`: authenticate against /v2/ (Basic) or the token service (Bearer) without asking for any scope. */
  async verifyCredentials(): Promise<void> {
    await this.ping();
    if (!this.challenge) return;
    this.scopes.clear();
    const res = await this.send('GET', new URL('/v2/', this.base));
    if (res.status !== 200) throw await statusError(res, 'login', true);
    drain(res);
  }

  async listTags(): Promise<string[]> {
    const res = await this.send('GET', 'tags/list');
    if (res.status !== 200) throw await statusError(res, 'tag list');
    const j = JSON.parse((await readBody(res, MAX_MANIFEST_SIZE, 'tag list')).toString('utf8')) as { tags?: unknown };
    return Array.isArray(j.tags) ? j.tags.filter((t): t is string => typeof t === 'string') : [];
  }
}

function backoff(attempt: number): number {
  return Math.min(200 * 2 ** (attempt - 1), 5_000) * (0.75 + Math.random() / 2);
}

/** Retry-After as seconds or an HTTP date, in ms; capped so a hostile server cannot park us. */
function retryAfter(res: HttpResponse): number | undefined {
  const v = res.headers['retry-after'];
  if (typeof v !== 'string' || v === '') return undefined;
  const secs = Number(v);
  const ms = Number.isFinite(secs) ? secs * 1000 : Date.parse(v) - Date.now();
  return Number.isFinite(ms) ? Math.min(Math.max(ms, 0), MAX_RETRY_AFTER_MS) : undefined;
}

/** A failed exchange as a StrataError: the registry's own error message when it sent one, else the status. */
export async function statusError(res: HttpResponse, what: string, hadCredentials?: boolean): Promise<StrataError> {
  let reason = `HTTP ${res.status}`;
  try {
    const body = await readBody(res, MAX_ERROR_BODY, 'error body');
    const j = JSON.parse(body.toString('utf8')) as { errors?: Array<{ code?: string; message?: string }>; details?: string };
    const first = j.errors?.[0];
    if (first) {
      const code = first.code?.toLowerCase().replace(/_/g, ' ');
      reason = code && first.message && first.message.toLowerCase() !== code ? `${code}: ${first.message}` : (first.message ?? code ?? reason);
    }
    else if (typeof j.details === 'string') reason = j.details;
  } catch {
    res.body.destroy();
  }
  const msg = `${what}: ${reason}`;
  switch (res.status) {
    case 401:
      return new StrataError('ErrUnauthorized', `${msg}${hadCredentials === false ? ' (no credentials: strata login first)' : ''}`);
    case 403:
      return new StrataError('ErrForbidden', `${msg} (access denied)`);
    case 404:
      return notFound(msg);
    case 400:
    case 405:
      return new StrataError('ErrInvalidArgument', msg);
    default:
      return new StrataError(res.status === 429 || res.status >= 500 ? 'ErrUnavailable' : 'ErrInternal', msg);
  }
}
