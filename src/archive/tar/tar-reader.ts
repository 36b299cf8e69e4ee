import { corrupt, limit, unsupported } from '../../errors.js';
import type { EntryType, TarHeader } from './tar-header.js';
import { BLOCK, isZeroBlock, padding, parseNumeric, parsePaxRecords, parsePaxTime, parsePaxInt, readString, verifyChecksum } from './tar-fields.js';

export interface TarLimits {
  /** Bound on PAX/GNU extension data before one entry (and on accumulated global PAX records); default 1 MiB. */
  maxHeaderBytes?: number;
  /** Default 10 million. */
  maxEntries?: number;
  /** Bound on name and linkname length in characters; default 64 KiB. */
  maxNameLength?: number;
  /** Bound on the bytes kept for `onTrailer` (GNU tar pads to 10 KiB records, `-b` can make them larger); default 8 MiB. */
  maxTrailerBytes?: number;
}

export interface TarEntry {
  /**
   * Parsed metadata. `name` is raw: exactly as stored (PAX/GNU long names applied), so directories usually end
   * with '/' and names may start with './' or contain '..'; callers clean and confine it.
   */
  header: TarHeader;
  /**
   * Exact bytes from the end of the previous entry's body to the start of this entry's body: padding of the
   * previous body, PAX/GNU extension headers, and this entry's 512-byte header. Concatenating headerBytes+body of
   * every entry then the trailer reproduces the archive byte for byte.
   */
  headerBytes: Buffer;
  /**
   * The body as zero-copy views of the source's chunks (do not modify them); must be consumed before asking for the
   * next entry, else it is skipped automatically. Iterating it after moving on to the next entry is an error.
   */
  body(): AsyncIterable<Buffer>;
  /**
   * The whole body as one view when the chunk at hand holds all of it (it then counts as read), else null and
   * nothing is consumed: lets a consumer of small files skip the per-entry async iteration.
   */
  bufferedBody(): Buffer | null;
}

export interface TarReadOptions {
  limits?: TarLimits;
  /** Everything after the last body: its padding, the zero blocks, any trailing bytes. */
  onTrailer?: (bytes: Buffer) => void;
}

const EMPTY = Buffer.alloc(0);
const truncated = () => corrupt('truncated tar archive');

const typeflags: Record<number, EntryType> = {
  0x30: 'file', // '0'
  0x00: 'file', // '\0' (old v7 regular file; a trailing '/' makes it a directory)
  0x37: 'file', // '7' contiguous file
  0x31: 'hardlink',
  0x32: 'symlink',
  0x33: 'char',
  0x34: 'block',
  0x35: 'directory',
  0x36: 'fifo',
};

/**
 * Parse a tar stream (ustar, PAX, GNU, v7) directly over the incoming chunks: headers are parsed in place when a
 * chunk holds them whole, bodies are handed out as views of the chunks, nothing is copied but header bytes.
 */
export async function* readTar(source: AsyncIterable<Buffer> | Iterable<Buffer>, opts: TarReadOptions = {}): AsyncGenerator<TarEntry> {
  const it = Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : syncToAsync(source[Symbol.iterator]());
  const reader = new TarReader(it, opts);
  try {
    for (;;) {
      const entry = await reader.next();
      if (!entry) return;
      yield entry;
    }
  } finally {
    await reader.close();
  }
}

function syncToAsync(it: Iterator<Buffer>): AsyncIterator<Buffer> {
  return {
    next: async () => it.next(),
    return: async () => it.return?.() ?? { done: true, value: undefined },
  };
}

class TarReader {
  private buf: Buffer = EMPTY;
  private pos = 0;
  /** Absolute offset of buf[pos] in the archive. */
  private offset = 0;
  private done = false;
  /** Unread bytes of the current body, and the padding after it. */
  private remaining = 0;
  private pad = 0;
  private generation = 0;
  private entries = 0;
  private globals = new Map<string, Buffer>();
  private globalBytes = 0;
  private readonly maxHeaderBytes: number;
  private readonly maxEntries: number;
  private readonly maxNameLength: number;
  private readonly maxTrailerBytes: number;

  constructor(
    private readonly it: AsyncIterator<Buffer>,
    private readonly opts: TarReadOptions,
  ) {
    const l = opts.limits ?? {};
    this.maxHeaderBytes = l.maxHeaderBytes ?? 1 << 20;
    this.maxEntries = l.maxEntries ?? 10_000_000;
    this.maxNameLength = l.maxNameLength ?? 1 << 16;
    this.maxTrailerBytes = l.maxTrailerBytes ?? 8 << 20;
  }

  async close(): Promise<void> {
    if (!this.done) {
      this.done = true;
      await this.it.return?.();
    }
  }

  /** Make at least one unread byte available; false at end of input. */
  private async more(): Promise<boolean> {
    if (this.pos < this.buf.length) return true;
    if (this.done) return false;
    for (;;) {
      const r = await this.it.next();
      if (r.done) {
        this.done = true;
        this.buf = EMPTY;
        this.pos = 0;
        return false;
      }
      if (r.value.length > 0) {
        this.buf = r.value;
        this.pos = 0;
        return true;
      }
    }
  }

  /**
   * Read exactly n bytes: a view of the current chunk when it holds them, else a copy. Null when the input ends
   * before the first byte; a truncation error when it ends in the middle.
   */
  private async read(n: number): Promise<Buffer | null> {
    if (!(await this.more())) return null;
    const avail = this.buf.length - this.pos;
    if (avail >= n) {
      const out = this.buf.subarray(this.pos, this.pos + n);
      this.pos += n;
      this.offset += n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let have = 0;
    while (have < n) {
      if (!(await this.more())) throw truncated();
      const take = Math.min(n - have, this.buf.length - this.pos);
      this.buf.copy(out, have, this.pos, this.pos + take);
      this.pos += take;
      have += take;
    }
    this.offset += n;
    return out;
  }

  private async skip(n: number): Promise<void> {
    while (n > 0) {
      if (!(await this.more())) throw truncated();
      const take = Math.min(n, this.buf.length - this.pos);
      this.pos += take;
      this.offset += take;
      n -= take;
    }
  }

  private async *bodyOf(generation: number): AsyncGenerator<Buffer> {
    if (generation !== this.generation) throw corrupt('tar entry body read after moving to the next entry');
    while (this.remaining > 0) {
      if (!(await this.more())) throw truncated();
      const take = Math.min(this.remaining, this.buf.length - this.pos);
      const out = this.buf.subarray(this.pos, this.pos + take);
      this.pos += take;
      this.offset += take;
      this.remaining -= take;
      yield out;
      if (generation !== this.generation) throw corrupt('tar entry body read after moving to the next entry');
    }
  }

  private bufferedBody(generation: number): Buffer | null {
    if (generation !== this.generation) throw corrupt('tar entry body read after moving to the next entry');
    if (this.remaining === 0 || this.buf.length - this.pos < this.remaining) return null;
    const out = this.buf.subarray(this.pos, this.pos + this.remaining);
    this.pos += this.remaining;
    this.offset += this.remaining;
    this.remaining = 0;
    return out;
  }

  async next(): Promise<TarEntry | null> {
    this.generation++;
    if (this.remaining > 0) {
      await this.skip(this.remaining);
      this.remaining = 0;
    }
    const parts: Buffer[] = [];
    if (this.pad > 0) {
      const p = await this.read(this.pad);
      if (!p) throw truncated();
      parts.push(p);
      this.pad = 0;
    }
    const local = new Map<string, Buffer>();
    let longName: string | undefined;
    let longLink: string | undefined;
    let extBytes = 0;
    let pendingExt = false;
    for (;;) {
      const at = this.offset;
      const blk = await this.read(BLOCK);
      if (!blk) {
        if (pendingExt) throw truncated();
        await this.finish(parts, false);
        return null;
      }
      if (isZeroBlock(blk)) {
        if (pendingExt) throw corrupt(`tar extension header without an entry before offset ${at}`);
        parts.push(blk);
        const second = await this.read(BLOCK);
        if (second) {
          if (!isZeroBlock(second)) throw corrupt(`tar archive has a lone zero block at offset ${at}`);
          parts.push(second);
        }
        await this.finish(parts, true);
        return null;
      }
      if (!verifyChecksum(blk)) throw corrupt(`tar header checksum mismatch at offset ${at}`);
      const flag = blk[156];
      if (flag === 0x78 /* x */ || flag === 0x67 /* g */ || flag === 0x4c /* L */ || flag === 0x4b /* K */) {
        const size = parseNumeric(blk, 124, 12, 'size', at);
        if (size < 0) throw corrupt(`tar extension header at offset ${at} has a negative size`);
        extBytes += size;
        if (extBytes > this.maxHeaderBytes) {
          throw limit(`tar extension headers before offset ${at + BLOCK} exceed ${this.maxHeaderBytes} bytes`);
        }
        const data = size > 0 ? await this.read(size) : EMPTY;
        if (!data) throw truncated();
        const padLen = padding(size);
        const padBytes = padLen > 0 ? await this.read(padLen) : EMPTY;
        if (!padBytes) throw truncated();
        parts.push(blk, data, padBytes);
        pendingExt = true;
        if (flag === 0x4c || flag === 0x4b) {
          const s = readString(data, 0, data.length);
          if (flag === 0x4c) longName = s;
          else longLink = s;
        } else if (flag === 0x78) {
          parsePaxRecords(data, local, at);
        } else {
          const g = new Map<string, Buffer>();
          parsePaxRecords(data, g, at);
          for (const [k, v] of g) {
            if (v.length === 0) this.globals.delete(k);
            else this.globals.set(k, v);
          }
          this.globalBytes += size;
          if (this.globalBytes > this.maxHeaderBytes) throw limit(`tar global PAX headers exceed ${this.maxHeaderBytes} bytes`);
        }
        continue;
      }
      const type = typeflags[flag];
      if (type === undefined) {
        if (flag === 0x53 /* S */) throw unsupported(`GNU sparse tar entry at offset ${at} is not supported`);
        throw corrupt(`unknown tar entry type ${JSON.stringify(String.fromCharCode(flag))} at offset ${at}`);
      }
      parts.push(blk);
      if (++this.entries > this.maxEntries) throw limit(`tar archive has more than ${this.maxEntries} entries`);
      const header = this.decodeHeader(blk, type, at, local, longName, longLink);
      this.remaining = header.size;
      this.pad = padding(header.size);
      const generation = this.generation;
      return {
        header,
        headerBytes: Buffer.concat(parts),
        body: () => this.bodyOf(generation),
        bufferedBody: () => this.bufferedBody(generation),
      };
    }
  }

  /** Read the rest of the input as the trailer. */
  private async finish(parts: Buffer[], drain: boolean): Promise<void> {
    const keep = this.opts.onTrailer !== undefined;
    let kept = parts.reduce((n, p) => n + p.length, 0);
    const out: Buffer[] = keep ? parts.slice() : [];
    while (drain && (await this.more())) {
      const chunk = this.pos === 0 ? this.buf : this.buf.subarray(this.pos);
      this.offset += chunk.length;
      this.pos = this.buf.length;
      if (keep) {
        kept += chunk.length;
        if (kept > this.maxTrailerBytes) throw limit(`tar trailer exceeds ${this.maxTrailerBytes} bytes`);
        out.push(chunk);
      }
    }
    this.opts.onTrailer?.(Buffer.concat(out));
  }

  private decodeHeader(
    b: Buffer,
    type: EntryType,
    at: number,
    local: Map<string, Buffer>,
    longName: string | undefined,
    longLink: string | undefined,
  ): TarHeader {
    const ustar = b[257] === 0x75 && b[258] === 0x73 && b[259] === 0x74 && b[260] === 0x61 && b[261] === 0x72;
    const posix = ustar && b[262] === 0; // "ustar\0": POSIX; "ustar  \0": GNU, whose prefix area holds other fields
    let name = readString(b, 0, 100);
    if (posix && b[345] !== 0) name = readString(b, 345, 155) + '/' + name;
    const header: TarHeader = {
      name,
      type,
      mode: parseNumeric(b, 100, 8, 'mode', at) & 0o7777,
      uid: parseNumeric(b, 108, 8, 'uid', at),
      gid: parseNumeric(b, 116, 8, 'gid', at),
      uname: ustar ? readString(b, 265, 32) : '',
      gname: ustar ? readString(b, 297, 32) : '',
      size: parseNumeric(b, 124, 12, 'size', at),
      mtime: { sec: parseNumeric(b, 136, 12, 'mtime', at), nsec: 0 },
      linkname: readString(b, 157, 100),
      devmajor: ustar ? parseNumeric(b, 329, 8, 'devmajor', at) : 0,
      devminor: ustar ? parseNumeric(b, 337, 8, 'devminor', at) : 0,
      xattrs: new Map(),
      pax: new Map(),
    };
    const records = this.globals.size > 0 ? new Map(this.globals) : local;
    if (records !== local) {
      for (const [k, v] of local) {
        if (v.length === 0) records.delete(k);
        else records.set(k, v);
      }
    }
    for (const [key, value] of records) this.applyPax(header, key, value, at);
    if (longName !== undefined) header.name = longName;
    if (longLink !== undefined) header.linkname = longLink;
    if (type === 'file' && b[156] === 0 && header.name.endsWith('/')) header.type = 'directory';
    if (header.size < 0) throw corrupt(`tar entry at offset ${at} has a negative size`);
    if (header.size > 0 && header.type !== 'file') {
      throw corrupt(`tar ${header.type} entry at offset ${at} has a body of ${header.size} bytes`);
    }
    for (const s of [header.name, header.linkname]) {
      if (s.length > this.maxNameLength) throw limit(`tar entry name at offset ${at} is longer than ${this.maxNameLength}`);
      if (s.includes('\0')) throw corrupt(`tar entry name at offset ${at} contains a NUL byte`);
    }
    return header;
  }

  private applyPax(h: TarHeader, key: string, value: Buffer, at: number): void {
    switch (key) {
      case 'path':
        h.name = value.toString('utf8');
        return;
      case 'linkpath':
        h.linkname = value.toString('utf8');
        return;
      case 'uname':
        h.uname = value.toString('utf8');
        return;
      case 'gname':
        h.gname = value.toString('utf8');
        return;
      case 'size':
      case 'uid':
      case 'gid':
        h[key] = parsePaxInt(value, key, at);
        return;
      case 'mtime':
      case 'atime':
      case 'ctime':
        h[key] = parsePaxTime(value, key, at);
        return;
    }
    if (key.startsWith('SCHILY.xattr.')) h.xattrs.set(key.slice(13), value);
    else if (key.startsWith('GNU.sparse.')) throw unsupported(`GNU sparse tar entry at offset ${at} is not supported`);
    else h.pax.set(key, value);
  }
}
