import { PassThrough } from 'node:stream';

const GATHER = 1 << 20;

/**
 * A second branch of a layer's download, handed to the applier while the bytes arrive, so that download,
 * decompression, hashing and apply overlap. The download stays the source of truth: it still goes whole into the
 * content store (verified, resumable), and the tap carries only a download that starts at byte 0 and is never
 * interrupted. The tap ends only once the content store has verified the blob's digest and size, so an apply
 * through it cannot complete on unverified bytes. When the tap is cut (broken connection, blob already there,
 * download begun before anyone wanted the tap), the applier reads the verified blob from the store instead.
 */
export class LayerTap {
  /** Compressed bytes, from byte 0 on. */
  readonly stream = new PassThrough({ highWaterMark: 4 << 20 });
  private state: 'idle' | 'flowing' | 'done' | 'cut' | 'detached' = 'idle';
  private wanted = false;
  private drained: (() => void) | null = null;
  /** Network chunks (~64 KiB) gathered into GATHER-sized pieces: each piece through the decompressor costs a thread-pool round trip. */
  private pending: Buffer[] = [];
  private pendingLen = 0;

  constructor() {
    this.stream.on('drain', () => this.wake());
    this.stream.on('close', () => this.wake());
    // A cut tap may have no reader yet (or never one): its error reaches the applier through its own listeners.
    this.stream.on('error', () => undefined);
  }

  private wake(): void {
    const d = this.drained;
    this.drained = null;
    d?.();
  }

  /** The applier will consume the tap (its parent is ready). False when it is too late: read from the store. */
  want(): boolean {
    this.wanted = true;
    return this.state === 'idle' || this.state === 'flowing';
  }

  /** The download begins a body at `offset`: true when the tap carries it. */
  start(offset: number): boolean {
    if (this.state !== 'idle') return this.state === 'flowing';
    if (this.wanted && offset === 0) {
      this.state = 'flowing';
      return true;
    }
    this.cut();
    return false;
  }

  /** Pass a chunk to the applier, waiting while it is behind (backpressure, so nothing piles up in memory). */
  async write(chunk: Buffer): Promise<void> {
    if (this.state !== 'flowing') return;
    this.pending.push(chunk);
    this.pendingLen += chunk.length;
    if (this.pendingLen < GATHER) return;
    if (this.stream.write(this.take())) return;
    await new Promise<void>((resolve) => {
      this.drained = resolve;
    });
  }

  /** The blob is verified in the content store: let the applier finish. */
  end(): void {
    if (this.state === 'flowing') {
      this.state = 'done';
      if (this.pendingLen > 0) this.stream.write(this.take());
      this.stream.end();
    } else this.cut();
  }

  /** The download cannot give the applier all the bytes from 0 (it broke, resumes, or never started a body). */
  cut(): void {
    if (this.state === 'done' || this.state === 'detached' || this.state === 'cut') return;
    this.state = 'cut';
    this.stream.destroy(new Error('layer download was interrupted'));
  }

  private take(): Buffer {
    const b = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingLen);
    this.pending = [];
    this.pendingLen = 0;
    return b;
  }

  /** The applier gave up (its own error): stop feeding it, the download carries on into the store. */
  detach(): void {
    if (this.state === 'flowing' || this.state === 'idle') this.state = 'detached';
    this.stream.destroy();
    this.wake();
  }

  /** True when an apply through the tap failed because the download side cut it, not because of the data. */
  get wasCut(): boolean {
    return this.state === 'cut';
  }
}
