import http, { type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import https from 'node:https';
import type { Readable } from 'node:stream';
import { limit, StrataError } from '../errors.js';

export interface HttpResponse {
  status: number;
  headers: IncomingHttpHeaders;
  body: IncomingMessage;
  url: URL;
}

export interface HttpRequestOptions {
  method: string;
  headers?: Record<string, string>;
  body?: Buffer | Readable;
  /** Accept any TLS certificate (an insecure registry). */
  insecureTls?: boolean;
}

/** Kept-alive connections: a pull makes many requests to one host, and each TLS handshake costs. */
const agents = {
  http: new http.Agent({ keepAlive: true, maxSockets: 32 }),
  https: new https.Agent({ keepAlive: true, maxSockets: 32 }),
  httpsInsecure: new https.Agent({ keepAlive: true, maxSockets: 32, rejectUnauthorized: false }),
};

/** A stalled connection (no byte for this long) is dropped, and a blob download resumes on a new one. */
const IDLE_TIMEOUT_MS = 60_000;

/** Network failures worth another attempt: the connection broke or stalled, the server was momentarily away. */
const TRANSIENT = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'ECONNABORTED', 'EAI_AGAIN', 'ECONNREFUSED', 'ERR_STREAM_PREMATURE_CLOSE', 'UND_ERR_SOCKET', 'EHOSTUNREACH', 'ENETUNREACH']);

/** A network-level failure (no HTTP answer), with whether retrying may help. */
export class NetworkError extends StrataError {
  constructor(
    message: string,
    readonly errno: string,
    cause?: unknown,
  ) {
    super('ErrUnavailable', message, { cause });
  }
  get transient(): boolean {
    return TRANSIENT.has(this.errno);
  }
}

/** Words for the errno codes users meet when a registry cannot be reached. */
function describe(code: string, host: string, message: string): string {
  switch (code) {
    case 'ENOTFOUND':
      return `no such host ${host}`;
    case 'ECONNREFUSED':
      return `connection refused by ${host}`;
    case 'ETIMEDOUT':
      return `connection to ${host} timed out`;
    case 'ECONNRESET':
      return `connection to ${host} was reset`;
    default:
      return `${host}: ${message}`;
  }
}

export function networkError(e: unknown, host: string): NetworkError {
  const err = e as NodeJS.ErrnoException;
  const code = err.code ?? (err.message === 'aborted' ? 'ECONNRESET' : 'EUNKNOWN');
  return new NetworkError(describe(code, host, err.message), code, e);
}

/** One HTTP exchange; the response body is left unread for the caller. Network failures become NetworkError. */
export function httpRequest(url: URL, opts: HttpRequestOptions): Promise<HttpResponse> {
  return new Promise((resolve, reject) => {
    const secure = url.protocol === 'https:';
    const mod = secure ? https : http;
    const agent = secure ? (opts.insecureTls ? agents.httpsInsecure : agents.https) : agents.http;
    const headers: Record<string, string> = { 'user-agent': 'strata/0.1', ...opts.headers };
    if (Buffer.isBuffer(opts.body)) headers['content-length'] = String(opts.body.length);
    // The socket timeout covers connecting and every wait for bytes, response body included.
    const req = mod.request(url, { method: opts.method, headers, agent, timeout: IDLE_TIMEOUT_MS }, (res) => {
      resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res, url });
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('connection stalled'), { code: 'ETIMEDOUT' })));
    req.on('error', (e) => reject(networkError(e, url.host)));
    if (opts.body === undefined) req.end();
    else if (Buffer.isBuffer(opts.body)) req.end(opts.body);
    else {
      opts.body.on('error', (e) => req.destroy(e));
      opts.body.pipe(req);
    }
  });
}

/** Read a response body whole, refusing more than `max` bytes (checked against Content-Length first). */
export async function readBody(res: HttpResponse, max: number, what: string): Promise<Buffer> {
  const declared = Number(res.headers['content-length']);
  if (Number.isFinite(declared) && declared > max) {
    res.body.destroy();
    throw limit(`${what} is ${declared} bytes, more than the ${max} allowed`);
  }
  const parts: Buffer[] = [];
  let len = 0;
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      len += chunk.length;
      if (len > max) {
        res.body.destroy();
        throw limit(`${what} is more than the ${max} bytes allowed`);
      }
      parts.push(chunk);
    }
  } catch (e) {
    if (e instanceof StrataError) throw e;
    throw networkError(e, res.url.host);
  }
  return Buffer.concat(parts, len);
}

/** Throw away a response body we do not need, keeping the connection reusable when it is short. */
export function drain(res: HttpResponse): void {
  res.body.resume();
  res.body.on('error', () => undefined);
}
