import { createHash } from 'node:crypto';
import { invalidArgument } from '../errors.js';
import { native } from '../native/native.js';

/** `sha256:<64 hex>`; branded so a plain string never passes for a verified digest. */
export type Digest = string & { readonly __brand: 'Digest' };

const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

export function parseDigest(s: string): Digest {
  if (!DIGEST_RE.test(s)) throw invalidArgument(`invalid digest "${s}": want sha256:<64 lowercase hex>`);
  return s as Digest;
}

export function isDigest(s: string): s is Digest {
  return DIGEST_RE.test(s);
}

export function digestHex(d: Digest): string {
  return d.slice(7);
}

export function sha256(data: string | Buffer): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}` as Digest;
}

/**
 * A running sha256 that also counts bytes, for streams. The hashing runs on a worker thread, the event loop only
 * queues chunks (a chunk must not change after update(), as no chunk of a stream does), and hands them over at
 * least JOB_BYTES at a time: waking a worker costs the event loop more than hashing 64 KiB on it.
 */
export class Digester {
  private readonly handle = native.sha256New();
  private queued: Buffer[] = [];
  private queuedBytes = 0;
  private running: Promise<void> | null = null;
  private failure: Error | null = null;
  size = 0;
  update(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.queued.push(chunk);
    this.queuedBytes += chunk.length;
    this.size += chunk.length;
    if (this.running === null && this.queuedBytes >= JOB_BYTES) this.running = this.drain(JOB_BYTES);
  }
  /** One update in flight, taking everything queued meanwhile, while at least `min` bytes are queued. */
  private async drain(min: number): Promise<void> {
    try {
      while (this.queuedBytes >= min && this.queued.length > 0) {
        const chunks = this.queued;
        this.queued = [];
        this.queuedBytes = 0;
        await native.sha256Update(this.handle, chunks);
      }
    } catch (e) {
      this.failure = e as Error;
    } finally {
      this.running = null;
    }
  }
  async digest(): Promise<Digest> {
    while (this.running !== null) await this.running;
    await this.drain(0);
    if (this.failure) throw this.failure;
    return `sha256:${native.sha256Digest(this.handle)}` as Digest;
  }
}

const JOB_BYTES = 1 << 20;
