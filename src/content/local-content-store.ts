import { closeSync, fstatSync, openSync, statSync } from 'node:fs';
import { link, mkdir, open, readdir, readFile, rm, stat, unlink, writeFile, type FileHandle } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { digestMismatch, internal, invalidArgument, isErrno, limit, notFound, sizeMismatch, StrataError } from '../errors.js';
import { Digester, digestHex, isDigest, type Digest } from '../util/digest.js';
import { fsyncDir } from '../util/atomic.js';
import { native, LOCK_EX, LOCK_NB, LOCK_UN } from '../native/native.js';
import type { BlobInfo, ContentStore, IngestOptions, IngestResult, IngestStatus } from './content-store.js';

const CHUNK = 1 << 20;
/**
 * Written data is sent to disk every WRITEBACK bytes while the ingest goes on: the fsync that commits a blob then
 * has little left to write (a 60 MB layer's fsync took ~50-90 ms at the end of its pull, on the pull's critical path).
 */
const WRITEBACK = 4 << 20;

/**
 * Blobs on the local filesystem: `<root>/content/blobs/sha256/<hex>`, unfinished ingests in
 * `<root>/content/ingest/<sha256(ref)>/{data,ref,startedat}` (the ref is hashed to keep paths short and safe).
 * A blob appears only by atomically linking fully written, fsynced, verified data into place (a hard link, unlike a
 * rename, never replaces a blob another writer published first), so a reader never sees a blob under a digest it
 * does not have, and two writers of one digest both succeed.
 */
export class LocalContentStore implements ContentStore {
  private readonly blobsDir: string;
  private readonly ingestDir: string;

  constructor(root: string) {
    this.blobsDir = join(root, 'content', 'blobs', 'sha256');
    this.ingestDir = join(root, 'content', 'ingest');
  }

  private blobPath(d: Digest): string {
    if (!isDigest(d)) throw invalidArgument(`invalid digest "${d}": want sha256:<64 lowercase hex>`);
    return join(this.blobsDir, digestHex(d));
  }

  private refDir(ref: string): string {
    return join(this.ingestDir, createHash('sha256').update(ref).digest('hex'));
  }

  async info(digest: Digest): Promise<BlobInfo | null> {
    try {
      const st = await stat(this.blobPath(digest));
      return { digest, size: st.size };
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return null;
      throw e;
    }
  }

  reader(digest: Digest, offset = 0): Readable {
    return Readable.from(this.chunks(digest, offset), { objectMode: false, highWaterMark: CHUNK });
  }

  private async *chunks(digest: Digest, offset: number): AsyncGenerator<Buffer> {
    const fh = await this.openBlob(digest);
    try {
      let pos = offset;
      for (;;) {
        const buf = Buffer.allocUnsafe(CHUNK);
        const { bytesRead } = await fh.read(buf, 0, CHUNK, pos);
        if (bytesRead === 0) return;
        pos += bytesRead;
        yield buf.subarray(0, bytesRead);
      }
    } finally {
      await fh.close();
    }
  }

  private async openBlob(digest: Digest): Promise<FileHandle> {
    try {
      return await open(this.blobPath(digest), 'r');
    } catch (e) {
      if (isErrno(e, 'ENOENT')) throw notFound(`content ${digest} not found`);
      throw e;
    }
  }

  async readBytes(digest: Digest, maxSize: number): Promise<Buffer> {
    const fh = await this.openBlob(digest);
    try {
      const { size } = await fh.stat();
      if (size > maxSize) throw limit(`blob ${digest} is ${size} bytes, more than the ${maxSize} allowed here`);
      return await fh.readFile();
    } finally {
      await fh.close();
    }
  }

  async ingest(ref: string, source: AsyncIterable<Buffer> | Iterable<Buffer>, opts: IngestOptions = {}): Promise<IngestResult> {
    if (opts.digest !== undefined) {
      const have = await this.info(opts.digest);
      if (have) {
        if (opts.size !== undefined && opts.size !== have.size) {
          throw sizeMismatch(`content ${opts.digest}: expected size ${opts.size}, but the stored blob has ${have.size}`);
        }
        (source as { destroy?: () => void }).destroy?.();
        return { ...have, created: false };
      }
    }
    const dir = this.refDir(ref);
    return this.withRefLock(dir, ref, async () => {
      const data = join(dir, 'data');
      const fh = await this.openIngest(dir, ref, opts.resumeFrom);
      let committed = false;
      try {
        const digester = new Digester();
        if (opts.resumeFrom) await rehash(fh, opts.resumeFrom, digester);
        await writeAll(fh, source, digester, opts.size, ref);
        const [digest] = await Promise.all([digester.digest(), fh.sync()]);
        const size = digester.size;
        if (opts.size !== undefined && size !== opts.size) {
          throw sizeMismatch(`ingest ${ref}: expected ${opts.size} bytes, got ${size}`);
        }
        if (opts.digest !== undefined && digest !== opts.digest) {
          throw digestMismatch(`ingest ${ref}: expected digest ${opts.digest}, got ${digest}`);
        }
        await fh.chmod(0o444);
        await fh.close();
        const created = await this.publish(data, digest);
        committed = true;
        await rm(dir, { recursive: true, force: true });
        return { digest, size, created };
      } catch (e) {
        await fh.close().catch(() => undefined);
        // Verified-wrong data is worth nothing: drop it. An interrupted source keeps its data for a resume.
        if (!committed && (e instanceof StrataError) && (e.code === 'ErrDigestMismatch' || e.code === 'ErrSizeMismatch')) {
          await rm(dir, { recursive: true, force: true });
        }
        throw e;
      }
    });
  }

  /** Make verified data visible under its digest: a hard link is atomic and never replaces an existing blob. */
  private async publish(data: string, digest: Digest): Promise<boolean> {
    await mkdir(this.blobsDir, { recursive: true });
    const target = this.blobPath(digest);
    try {
      await link(data, target);
    } catch (e) {
      if (isErrno(e, 'EEXIST')) return false;
      throw e;
    }
    await fsyncDir(this.blobsDir);
    return true;
  }

  private async openIngest(dir: string, ref: string, resumeFrom: number | undefined): Promise<FileHandle> {
    const data = join(dir, 'data');
    if (resumeFrom !== undefined && resumeFrom > 0) {
      if (!Number.isSafeInteger(resumeFrom) || resumeFrom < 0) throw invalidArgument(`invalid resume offset ${resumeFrom}`);
      let fh: FileHandle;
      try {
        fh = await open(data, 'r+');
      } catch (e) {
        if (isErrno(e, 'ENOENT')) throw notFound(`no unfinished ingest ${ref} to resume`);
        throw e;
      }
      const { size } = await fh.stat();
      if (resumeFrom > size) {
        await fh.close();
        throw invalidArgument(`cannot resume ingest ${ref} at ${resumeFrom}: only ${size} bytes are kept`);
      }
      await fh.truncate(resumeFrom);
      return fh;
    }
    await writeFile(join(dir, 'ref'), ref);
    await writeFile(join(dir, 'startedat'), new Date().toISOString());
    return open(data, 'w', 0o644);
  }

  /**
   * One writer per ref, across processes: an flock on `<dir>/lock`. The lock file disappears with the ingest, so
   * after locking we check that the path still names the file we locked, else retry on the new one.
   */
  private async withRefLock<T>(dir: string, ref: string, fn: () => Promise<T>): Promise<T> {
    const lockPath = join(dir, 'lock');
    for (;;) {
      await mkdir(dir, { recursive: true });
      let fd: number;
      try {
        fd = openSync(lockPath, 'a', 0o600);
      } catch (e) {
        if (isErrno(e, 'ENOENT')) continue; // the ingest was just committed or aborted
        throw e;
      }
      try {
        if (!native.flock(fd, LOCK_EX | LOCK_NB)) {
          throw new StrataError('ErrUnavailable', `ingest ${ref} is in use by another writer`);
        }
        const same = (() => {
          try {
            return statSync(lockPath).ino === fstatSync(fd).ino;
          } catch {
            return false;
          }
        })();
        if (!same) continue;
        try {
          return await fn();
        } finally {
          native.flock(fd, LOCK_UN);
        }
      } finally {
        closeSync(fd);
      }
    }
  }

  async ingestStatus(ref: string): Promise<IngestStatus | null> {
    const dir = this.refDir(ref);
    try {
      const st = await stat(join(dir, 'data'));
      const started = await readFile(join(dir, 'startedat'), 'utf8').catch(() => undefined);
      return { ref, offset: st.size, startedAt: started ? new Date(started) : st.birthtime, updatedAt: st.mtime };
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return null;
      throw e;
    }
  }

  async abortIngest(ref: string): Promise<void> {
    const dir = this.refDir(ref);
    try {
      await stat(dir);
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return;
      throw e;
    }
    await this.withRefLock(dir, ref, () => rm(dir, { recursive: true, force: true }));
  }

  async delete(digest: Digest): Promise<void> {
    try {
      await unlink(this.blobPath(digest));
    } catch (e) {
      if (isErrno(e, 'ENOENT')) throw notFound(`content ${digest} not found`);
      throw e;
    }
  }

  async *list(): AsyncIterable<BlobInfo> {
    let names: string[];
    try {
      names = await readdir(this.blobsDir);
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return;
      throw e;
    }
    for (const name of names.sort()) {
      const digest = `sha256:${name}`;
      if (!isDigest(digest)) continue;
      const info = await this.info(digest);
      if (info) yield info;
    }
  }

  async gc(keep: ReadonlySet<Digest>): Promise<number> {
    let removed = 0;
    for await (const { digest } of this.list()) {
      if (keep.has(digest)) continue;
      await unlink(this.blobPath(digest)).then(
        () => removed++,
        (e: unknown) => {
          if (!isErrno(e, 'ENOENT')) throw e;
        },
      );
    }
    return removed;
  }
}

/** Recover the digest state of kept data: one pass over its first `length` bytes. */
async function rehash(fh: FileHandle, length: number, digester: Digester): Promise<void> {
  let pos = 0;
  while (pos < length) {
    const buf = Buffer.allocUnsafe(CHUNK); // not reused: the digester reads it later, on a worker thread
    const { bytesRead } = await fh.read(buf, 0, Math.min(CHUNK, length - pos), pos);
    if (bytesRead === 0) throw internal(`ingest data shrank while resuming (at ${pos} of ${length} bytes)`);
    digester.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
}

/**
 * Append the source to the ingest file, hashing as it goes, in writes of about 1 MiB. On a source error what was
 * received is still written, so `ingestStatus` reports it and a resume continues after it.
 */
async function writeAll(fh: FileHandle, source: AsyncIterable<Buffer> | Iterable<Buffer>, digester: Digester, expectedSize: number | undefined, ref: string): Promise<void> {
  let pos = digester.size;
  let flushedTo = pos;
  let pending: Buffer[] = [];
  let pendingLen = 0;
  // One writev of the chunks as they came: no copy into a joint buffer.
  const flush = async () => {
    let bufs = pending;
    pending = [];
    pendingLen = 0;
    while (bufs.length > 0) {
      let { bytesWritten } = await fh.writev(bufs, pos);
      pos += bytesWritten;
      while (bufs.length > 0 && bytesWritten >= bufs[0]!.length) bytesWritten -= bufs.shift()!.length;
      if (bytesWritten > 0) bufs[0] = bufs[0]!.subarray(bytesWritten);
    }
    if (pos - flushedTo >= WRITEBACK) {
      native.startWriteback(fh.fd, flushedTo, pos - flushedTo);
      flushedTo = pos;
    }
  };
  try {
    for await (const chunk of source) {
      digester.update(chunk);
      if (expectedSize !== undefined && digester.size > expectedSize) {
        throw sizeMismatch(`ingest ${ref}: expected ${expectedSize} bytes, got more`);
      }
      pending.push(chunk);
      pendingLen += chunk.length;
      if (pendingLen >= CHUNK) await flush();
    }
  } catch (e) {
    if (!(e instanceof StrataError && e.code === 'ErrSizeMismatch')) await flush().catch(() => undefined);
    throw e;
  }
  await flush();
}
