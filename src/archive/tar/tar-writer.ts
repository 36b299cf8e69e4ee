import { Readable } from 'node:stream';
import { invalidArgument, sizeMismatch } from '../../errors.js';
import type { EntryType, TarHeader } from './tar-header.js';
import { BLOCK, padding, fitsOctal, formatPaxRecord, formatPaxTime, writeChecksum, writeOctal } from './tar-fields.js';

export interface TarWriteEntry {
  header: TarHeader;
  /**
   * Required for 'file' entries with size > 0; its length must equal header.size. A synchronous iterable is read
   * without a promise per chunk (small files cost a syscall, not an event-loop hop).
   */
  body?: AsyncIterable<Buffer> | Iterable<Buffer> | Buffer;
  /**
   * Emit these bytes verbatim instead of encoding `header` (byte-exact re-export of `TarEntry.headerBytes`). They
   * hold the previous body's padding, which is then not written again.
   */
  headerBytes?: Buffer;
}

export interface TarWriteOptions {
  /**
   * Bytes after the last body, verbatim (as given to `onTrailer`, including the last body's padding). A function is
   * called after the last entry, for re-exporting while reading (the reader reports its trailer only at the end).
   * Default (also when the function returns undefined): padding and two zero blocks.
   */
  trailer?: Buffer | (() => Buffer | undefined);
}

const typeflag: Record<EntryType, number> = {
  file: 0x30,
  hardlink: 0x31,
  symlink: 0x32,
  char: 0x33,
  block: 0x34,
  directory: 0x35,
  fifo: 0x36,
};

/** Keys the header fields own; a stray copy in `header.pax` must not contradict them. */
const ownKeys = new Set(['path', 'linkpath', 'size', 'uid', 'gid', 'uname', 'gname', 'mtime', 'atime', 'ctime']);

const zeros = Buffer.alloc(2 * BLOCK);

/** Output chunk size: small headers and bodies are gathered up to this, so a layer of small files crosses streams in few chunks. */
const BATCH = 1 << 20;
/** Pieces (or runs of adjacent pieces) at least this big go out as they are: copying them would cost more than a chunk more. */
const PASS_THROUGH = 64 << 10;

/** Encode entries as a tar stream (ustar, with a PAX header only when a field needs one); pulls entries as the consumer reads. */
export function writeTar(entries: AsyncIterable<TarWriteEntry> | Iterable<TarWriteEntry>, opts: TarWriteOptions = {}): Readable {
  return Readable.from(generate(entries, opts), { objectMode: false, highWaterMark: BATCH });
}

/**
 * Pieces gathered into output chunks; the bytes and their order never depend on the gathering. Pieces that lie
 * side by side in one allocation (a batch its producer laid out as tar) join into one view, and a view that big
 * goes out as it is: only small pieces are copied together.
 */
class Batch {
  private parts: Buffer[] = [];
  private bytes = 0;
  /** Adjacent pieces not yet in parts: the bytes of `run`'s allocation from runStart to runEnd. */
  private run: Buffer | null = null;
  private runStart = 0;
  private runEnd = 0;
  add(b: Buffer): void {
    if (b.length === 0) return;
    this.bytes += b.length;
    if (this.run !== null && b.buffer === this.run.buffer && b.byteOffset === this.runEnd) {
      this.runEnd += b.length;
      return;
    }
    this.endRun();
    this.run = b;
    this.runStart = b.byteOffset;
    this.runEnd = b.byteOffset + b.length;
  }
  get full(): boolean {
    return this.bytes >= BATCH;
  }
  /** The gathered bytes as few chunks: each view of PASS_THROUGH bytes or more alone, the small pieces between concatenated. */
  take(): Buffer[] {
    this.endRun();
    const out: Buffer[] = [];
    let small: Buffer[] = [];
    const flush = () => {
      if (small.length > 0) out.push(small.length === 1 ? small[0]! : Buffer.concat(small));
      small = [];
    };
    for (const p of this.parts) {
      if (p.length < PASS_THROUGH) small.push(p);
      else {
        flush();
        out.push(p);
      }
    }
    flush();
    this.parts = [];
    this.bytes = 0;
    return out;
  }
  private endRun(): void {
    const r = this.run;
    if (r === null) return;
    const n = this.runEnd - this.runStart;
    this.parts.push(r.byteOffset === this.runStart && r.length === n ? r : Buffer.from(r.buffer, this.runStart, n));
    this.run = null;
  }
}

async function* generate(entries: AsyncIterable<TarWriteEntry> | Iterable<TarWriteEntry>, opts: TarWriteOptions): AsyncGenerator<Buffer> {
  const out = new Batch();
  let pendingPad = 0;
  // A synchronous source is walked without awaiting each entry.
  const sync = Symbol.iterator in entries ? (entries as Iterable<TarWriteEntry>)[Symbol.iterator]() : null;
  const async = sync ? null : (entries as AsyncIterable<TarWriteEntry>)[Symbol.asyncIterator]();
  try {
    for (;;) {
      const r = sync ? sync.next() : await async!.next();
      if (r.done) break;
      const entry = r.value;
      const { header } = entry;
      if (entry.headerBytes) {
        const rest = entry.headerBytes.length - pendingPad;
        if (rest < BLOCK || rest % BLOCK !== 0) {
          throw invalidArgument(`tar entry ${JSON.stringify(header.name)}: headerBytes do not follow the previous entry's padding`);
        }
        out.add(entry.headerBytes);
      } else {
        if (pendingPad > 0) out.add(zeros.subarray(0, pendingPad));
        out.add(encodeHeader(header));
      }
      const body = bodyOf(entry);
      if (Symbol.iterator in body) {
        for (const chunk of body) {
          out.add(chunk);
          if (out.full) yield* out.take();
        }
      } else {
        for await (const chunk of body) {
          out.add(chunk);
          if (out.full) yield* out.take();
        }
      }
      pendingPad = padding(header.size);
      if (out.full) yield* out.take();
    }
  } finally {
    if (sync) sync.return?.();
    else await async!.return?.();
  }
  const trailer = typeof opts.trailer === 'function' ? opts.trailer() : opts.trailer;
  if (trailer) out.add(trailer);
  else {
    if (pendingPad > 0) out.add(zeros.subarray(0, pendingPad));
    out.add(zeros);
  }
  yield* out.take();
}

/** The entry's body chunks, checked against header.size; synchronous when the body is. */
function bodyOf({ header, body }: TarWriteEntry): Iterable<Buffer> | AsyncIterable<Buffer> {
  const mismatch = (n: number) => sizeMismatch(`tar entry ${JSON.stringify(header.name)}: body has ${n} bytes, header says ${header.size}`);
  if (header.type !== 'file' && header.size !== 0) throw invalidArgument(`tar ${header.type} entry ${JSON.stringify(header.name)} must have size 0`);
  if (body === undefined) {
    if (header.size !== 0) throw mismatch(0);
    return [];
  }
  if (Buffer.isBuffer(body)) {
    if (body.length !== header.size) throw mismatch(body.length);
    return [body];
  }
  if (Symbol.iterator in body) {
    return (function* () {
      let n = 0;
      for (const chunk of body) {
        n += chunk.length;
        if (n > header.size) throw mismatch(n);
        yield chunk;
      }
      if (n !== header.size) throw mismatch(n);
    })();
  }
  return (async function* () {
    let n = 0;
    for await (const chunk of body) {
      n += chunk.length;
      if (n > header.size) throw mismatch(n);
      yield chunk;
    }
    if (n !== header.size) throw mismatch(n);
  })();
}

const isAscii = (b: Buffer) => !b.some((c) => c >= 0x80);

/** Split a path over ustar's prefix (155) and name (100) fields at a '/'; null if impossible. */
function splitUstar(p: Buffer): [Buffer, Buffer] | null {
  if (p.length <= 100) return [Buffer.alloc(0), p];
  if (p.length > 256) return null;
  // The slash must leave at most 155 bytes before it and 1..100 after it.
  for (let i = Math.max(0, p.length - 101); i <= Math.min(155, p.length - 2); i++) {
    if (p[i] === 0x2f && i > 0) return [p.subarray(0, i), p.subarray(i + 1)];
  }
  return null;
}

/** The 512-byte header, preceded by a PAX extension header when some field does not fit ustar. */
export function encodeHeader(h: TarHeader): Buffer {
  const name = h.type === 'directory' && !h.name.endsWith('/') ? h.name + '/' : h.name;
  const records: Buffer[] = [];
  // From Node's shared pool, zeroed by hand: a zero-filled allocation is an ArrayBuffer of its own per entry.
  const b = Buffer.allocUnsafe(BLOCK).fill(0);

  const nameBytes = Buffer.from(name, 'utf8');
  const split = isAscii(nameBytes) ? splitUstar(nameBytes) : null;
  if (split) {
    split[1].copy(b, 0);
    split[0].copy(b, 345);
  } else {
    records.push(formatPaxRecord('path', nameBytes));
    nameBytes.copy(b, 0, 0, 100);
  }
  const link = Buffer.from(h.linkname, 'utf8');
  if (link.length <= 100 && isAscii(link)) link.copy(b, 157);
  else {
    records.push(formatPaxRecord('linkpath', link));
    link.copy(b, 157, 0, 100);
  }
  writeOctal(b, 100, 8, h.mode & 0o7777);
  for (const [key, off, len] of [['uid', 108, 8], ['gid', 116, 8], ['size', 124, 12]] as const) {
    if (!writeOctal(b, off, len, h[key])) {
      if (!Number.isSafeInteger(h[key]) || (key === 'size' && h.size < 0)) throw invalidArgument(`tar entry ${JSON.stringify(name)}: invalid ${key} ${h[key]}`);
      records.push(formatPaxRecord(key, String(h[key])));
      writeOctal(b, off, len, 0);
    }
  }
  if (!Number.isSafeInteger(h.mtime.sec) || !Number.isInteger(h.mtime.nsec) || h.mtime.nsec < 0 || h.mtime.nsec >= 1e9) {
    throw invalidArgument(`tar entry ${JSON.stringify(name)}: invalid mtime`);
  }
  if (h.mtime.nsec !== 0 || !fitsOctal(h.mtime.sec, 12)) records.push(formatPaxRecord('mtime', formatPaxTime(h.mtime)));
  writeOctal(b, 136, 12, fitsOctal(h.mtime.sec, 12) ? h.mtime.sec : 0);
  if (h.atime) records.push(formatPaxRecord('atime', formatPaxTime(h.atime)));
  if (h.ctime) records.push(formatPaxRecord('ctime', formatPaxTime(h.ctime)));
  b[156] = typeflag[h.type];
  b.write('ustar\x0000', 257, 'latin1');
  for (const [key, off] of [['uname', 265], ['gname', 297]] as const) {
    if (h[key] === '') continue;
    const v = Buffer.from(h[key], 'utf8');
    if (v.length <= 32 && isAscii(v)) v.copy(b, off);
    else records.push(formatPaxRecord(key, v));
  }
  if (!writeOctal(b, 329, 8, h.devmajor) || !writeOctal(b, 337, 8, h.devminor)) {
    throw invalidArgument(`tar entry ${JSON.stringify(name)}: device number ${h.devmajor},${h.devminor} out of range`);
  }
  for (const [k, v] of h.pax) if (!ownKeys.has(k) && !k.startsWith('SCHILY.xattr.')) records.push(formatPaxRecord(k, v));
  for (const [k, v] of h.xattrs) records.push(formatPaxRecord('SCHILY.xattr.' + k, v));
  writeChecksum(b);
  if (records.length === 0) return b;
  return paxHeader(name, h, records, b);
}

/** The PAX extension header holding `records`, its data and padding, then the entry's own block `b`: one buffer. */
function paxHeader(name: string, h: TarHeader, records: Buffer[], b: Buffer): Buffer {
  let size = 0;
  for (const r of records) size += r.length;
  const pad = padding(size);
  const out = Buffer.alloc(BLOCK + size + pad + BLOCK);
  const x = out.subarray(0, BLOCK);
  const base = name.replace(/\/+$/, '').split('/').pop() || '.';
  Buffer.from(`PaxHeaders/${base}`, 'utf8').copy(x, 0, 0, 100);
  writeOctal(x, 100, 8, 0o644);
  writeOctal(x, 108, 8, 0);
  writeOctal(x, 116, 8, 0);
  writeOctal(x, 124, 12, size);
  writeOctal(x, 136, 12, fitsOctal(h.mtime.sec, 12) ? h.mtime.sec : 0);
  x[156] = 0x78; // 'x'
  x.write('ustar\x0000', 257, 'latin1');
  writeChecksum(x);
  let off = BLOCK;
  for (const r of records) off += r.copy(out, off);
  b.copy(out, off + pad);
  return out;
}
