import { Agent, request } from 'node:http';

/**
 * A minimal Docker Engine API client over dockerd's unix socket, so that per-operation timings measure
 * the daemon and not the docker CLI's process start-up. Connections are kept alive, as an SDK's are.
 */
export class DockerApi {
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 1 });
  private readonly socketPath: string;

  constructor(host: string) {
    if (!host.startsWith('unix://')) throw new Error(`not a unix socket host: ${host}`);
    this.socketPath = host.slice('unix://'.length);
  }

  /** One request; resolves with the parsed JSON body (or null), rejects on a non-2xx status. */
  call<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    return new Promise((resolve, reject) => {
      const req = request(
        {
          socketPath: this.socketPath,
          agent: this.agent,
          method,
          path,
          headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
        },
        (res) => {
          const parts: Buffer[] = [];
          res.on('data', (b: Buffer) => parts.push(b));
          res.on('error', reject);
          res.on('end', () => {
            const text = Buffer.concat(parts).toString();
            const status = res.statusCode ?? 0;
            if (status < 200 || status >= 300) return reject(new Error(`docker API ${method} ${path}: ${status} ${text.trim()}`));
            resolve((text ? JSON.parse(text) : null) as T);
          });
        },
      );
      req.on('error', reject);
      req.end(payload);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
