import { Readable } from 'node:stream';
import { conflict, isErrno } from '../errors.js';
import { native } from '../native/native.js';
import { readExactly } from '../util/read-exactly.js';
import type { TarHeader } from './tar/tar-header.js';
import { BLOCK, padding } from './tar/tar-fields.js';
import { encodeHeader } from './tar/tar-writer.js';

/**
 * An entry of a tree on the host, for hostTar: its header, and for a regular file with a body the host path it
 * is read from (whole, in a batch, up to SMALL_FILE bytes; streamed in chunks above).
 */
export interface HostEntry {
  header: TarHeader;
  host?: string;
}

/** Files up to this size are read whole, in batches on a worker thread; bigger ones stream in chunks. */
const SMALL_FILE = 1 << 20;
const BATCH_FILES = 64;
const BATCH_BYTES = 4 << 20;
const BATCH_ENTRIES = 1024;
const READS_AHEAD = 3;

/** A batch of entries laid out as tar bytes; a big file's body goes out between `arena` views. */
interface Batch {
  arena: Buffer;
  /** Arena offsets right after a big file's header, where its streamed body goes. */
  cuts: Array<{ at: number; path: string; size: number }>;
  paths: string[];
  read: Promise<(Error & { index?: number }) | null> | null;
  empty: boolean;
}

/**
 * The tar of host entries (the tree walks and change sets of export-changes.ts), written straight as bytes: each
 * batch of entries is laid out in one allocation as the finished tar (the previous body's padding, headers, small
 * bodies), the small bodies read into their places by one native.readFiles on a worker thread, up to READS_AHEAD
 * batches ahead of what is sent (a settled cache makes every read wait for the disk). No object per entry crosses
 * a stream, and no ArrayBuffer is made per small file or header (each cost more than its read).
 */
export function hostTar(entries: Iterator<HostEntry> | AsyncIterator<HostEntry>): Readable {
  return Readable.from(hostTarBytes(entries), { objectMode: false });
}

async function* hostTarBytes(entries: Iterator<HostEntry> | AsyncIterator<HostEntry>): AsyncGenerator<Buffer> {
  let owed = 0; // the padding the last entry taken still owes after its body
  const take = async (): Promise<Batch> => {
    const heads: Buffer[] = [];
    const pads: number[] = [];
    const small: number[] = []; // per entry: body bytes read into the arena
    const cuts: Batch['cuts'] = [];
    const paths: string[] = [];
    let bytes = 0;
    while (heads.length < BATCH_ENTRIES && paths.length < BATCH_FILES && bytes < BATCH_BYTES) {
      const r = await entries.next();
      if (r.done) break;
      const { header, host } = r.value;
      const head = encodeHeader(header);
      const size = host === undefined ? 0 : header.size;
      heads.push(head);
      pads.push(owed);
      bytes += owed + head.length;
      if (size > SMALL_FILE) {
        cuts.push({ at: bytes, path: host!, size });
        small.push(0);
      } else {
        if (size > 0) paths.push(host!);
        small.push(size);
        bytes += size;
      }
      owed = padding(header.size);
    }
    const arena = Buffer.allocUnsafe(bytes);
    const bodies: Buffer[] = [];
    let off = 0;
    heads.forEach((head, i) => {
      arena.fill(0, off, (off += pads[i]!));
      off += head.copy(arena, off);
      if (small[i]! > 0) bodies.push(arena.subarray(off, (off += small[i]!)));
    });
    const read = paths.length === 0 ? null : native.readFiles(paths, bodies).then(() => null, (e: Error & { index?: number }) => e);
    return { arena, cuts, paths, read, empty: heads.length === 0 };
  };
  try {
    // Batches are taken one after another (the walk may wait for a directory scan), READS_AHEAD of them ahead of
    // what is sent, so that as many reads are in flight.
    const queue: Array<Promise<Batch>> = [];
    for (;;) {
      while (queue.length < READS_AHEAD) {
        const p = (queue.at(-1) ?? Promise.resolve()).then(take);
        p.catch(() => undefined); // awaited below, unless the consumer stops first
        queue.push(p);
      }
      const b = await queue.shift()!;
      if (b.empty) break;
      const failure = await b.read;
      if (failure) {
        const path = b.paths[failure.index ?? 0] ?? '';
        throw isErrno(failure, 'ENODATA') ? shrank(path, failure) : readFailure(path, failure);
      }
      let from = 0;
      for (const cut of b.cuts) {
        yield b.arena.subarray(from, cut.at);
        yield* readExactly(cut.path, cut.size, { failed: (e) => readFailure(cut.path, e), short: () => shrank(cut.path) });
        from = cut.at;
      }
      if (from < b.arena.length) yield b.arena.subarray(from);
    }
  } finally {
    await entries.return?.();
  }
  // The end: the last body's padding and two zero blocks.
  yield Buffer.alloc(owed + 2 * BLOCK);
}

export const shrank = (path: string, cause?: unknown) => conflict(`${path} shrank while its layer was being exported`, cause);

/** A file measured by the walk that is gone, or a link now, when its body is read: a change under the export. */
function readFailure(path: string, e: unknown): unknown {
  return isErrno(e, 'ENOENT') || isErrno(e, 'ELOOP') ? conflict(`${path} changed while its layer was being exported`, e) : e;
}
