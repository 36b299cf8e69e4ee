import { createGzip, createGunzip } from 'node:zlib';
import { createReadStream, createWriteStream } from 'node:fs';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { join } from 'node:path';
import { corrupt, isErrno } from '../errors.js';
import { native } from '../native/native.js';
import { readExactly } from '../util/read-exactly.js';

/*
 * A layer tar's framing, recorded while the layer is applied, so the exact original bytes (and so the
 * diffID) can be produced again from the files on disk: per entry the raw header bytes (extension
 * headers and the previous body's padding included), the entry name and body size; then the trailer.
 * Stored as gzip'd NDJSON, a line per entry.
 */

interface EntryLine {
  h: string;
  p: string;
  s: number;
}
interface TrailerLine {
  t: string;
}

/** Lines are gathered up to this many bytes per gzip write: a write per entry would cost a threadpool round trip per entry. */
const LINES_PER_WRITE = 256 << 10;

export class TarSplitWriter {
  private readonly gz = createGzip({ level: 1 });
  private readonly done: Promise<void>;
  // Each line is encoded into this buffer as it comes: concatenating the lines as a string and converting that
  // costs ~3x as much (V8 flattens the rope, then encodes it on a slow path).
  private pending = Buffer.allocUnsafe(LINES_PER_WRITE);
  private used = 0;

  constructor(path: string) {
    this.done = pipeline(this.gz, createWriteStream(path, { mode: 0o600 }));
  }

  entry(headerBytes: Buffer, name: string, size: number): void {
    const line: EntryLine = { h: headerBytes.toString('base64'), p: name, s: size };
    this.add(JSON.stringify(line) + '\n');
  }

  trailer(bytes: Buffer): void {
    const line: TrailerLine = { t: bytes.toString('base64') };
    this.add(JSON.stringify(line) + '\n');
  }

  private add(line: string): void {
    const n = Buffer.byteLength(line);
    if (this.used + n > this.pending.length) {
      this.flush();
      if (n > this.pending.length) {
        this.gz.write(line);
        return;
      }
    }
    this.used += this.pending.write(line, this.used);
  }

  private flush(): void {
    if (this.used === 0) return;
    this.gz.write(this.pending.subarray(0, this.used));
    // The written part now belongs to the gzip stream until it is consumed.
    this.pending = Buffer.allocUnsafe(LINES_PER_WRITE);
    this.used = 0;
  }

  async close(): Promise<void> {
    this.flush();
    this.gz.end();
    await this.done;
  }

  /** Abandon the recording (the apply failed); the caller removes the file. */
  async abort(): Promise<void> {
    this.gz.destroy();
    await this.done.catch(() => undefined);
  }
}

/** Cleaned entry name as the applier resolved it: no leading `/` or `./`. */
function relName(name: string): string {
  return name.replace(/^(\.?\/)+/, '');
}

/** Bodies up to this size are read in batches on a worker thread (native.readFiles), up to BATCH_FILES or BATCH_BYTES at a time. */
const SMALL_BODY = 1 << 20;
const BATCH_FILES = 64;
const BATCH_BYTES = 4 << 20;

/** Regenerate the layer tar: recorded framing, bodies read from the layer's files under `root`. */
export function tarSplitStream(splitPath: string, root: string): Readable {
  async function* generate(): AsyncGenerator<Buffer> {
    const lines = createInterface({ input: createReadStream(splitPath).pipe(createGunzip()), crlfDelay: Infinity });
    const batch = new SmallBodies();
    for await (const text of lines) {
      if (text === '') continue;
      const line = JSON.parse(text) as EntryLine | TrailerLine;
      if ('t' in line) {
        if (!batch.empty) yield await batch.read();
        yield Buffer.from(line.t, 'base64');
        continue;
      }
      const head = Buffer.from(line.h, 'base64');
      const path = join(root, relName(line.p));
      if (line.s > 0 && line.s <= SMALL_BODY) {
        batch.add(head, path, line.s);
        if (batch.full) yield await batch.read();
        continue;
      }
      if (!batch.empty) yield await batch.read();
      yield head;
      // O_NOFOLLOW: the recorded name held a regular file when applied; never read through a link now.
      if (line.s > 0) yield* readExactly(path, line.s, { failed: (e) => e, short: () => shorter(path) });
    }
    if (!batch.empty) yield await batch.read();
  }
  return Readable.from(generate(), { objectMode: false });
}

/**
 * Headers and small bodies laid out as the tar's bytes in one buffer, the bodies read into their places by one
 * native.readFiles on a worker thread: a file read per entry on the main thread would wait for the disk there.
 */
class SmallBodies {
  private heads: Buffer[] = [];
  private paths: string[] = [];
  private sizes: number[] = [];
  private bytes = 0;

  get empty(): boolean {
    return this.heads.length === 0;
  }
  get full(): boolean {
    return this.paths.length >= BATCH_FILES || this.bytes >= BATCH_BYTES;
  }

  add(head: Buffer, path: string, size: number): void {
    this.heads.push(head);
    this.paths.push(path);
    this.sizes.push(size);
    this.bytes += head.length + size;
  }

  /** The batch's bytes, and the batch emptied. */
  async read(): Promise<Buffer> {
    const out = Buffer.allocUnsafe(this.bytes);
    const bodies: Buffer[] = [];
    let off = 0;
    this.heads.forEach((h, i) => {
      off += h.copy(out, off);
      bodies.push(out.subarray(off, (off += this.sizes[i]!)));
    });
    const paths = this.paths;
    this.heads = [];
    this.paths = [];
    this.sizes = [];
    this.bytes = 0;
    try {
      await native.readFiles(paths, bodies);
    } catch (e) {
      const path = paths[(e as { index?: number }).index ?? 0];
      throw isErrno(e, 'ENODATA') ? shorter(path!) : e;
    }
    return out;
  }
}

const shorter = (path: string) => corrupt(`layer data changed on disk: ${path} is shorter than recorded`);
