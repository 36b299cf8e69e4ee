import type { Readable } from 'node:stream';
import type { Digest } from '../util/digest.js';

export interface BlobInfo {
  digest: Digest;
  size: number;
}

/** Reads blobs by digest. Everything it returns was verified against its digest when it was ingested. */
export interface Provider {
  /** The blob's size, or null when the store does not hold it. */
  info(digest: Digest): Promise<BlobInfo | null>;
  /** The blob from `offset` on, in 1 MiB chunks; the stream fails with ErrNotFound when the blob is absent. */
  reader(digest: Digest, offset?: number): Readable;
  /** A small blob (manifest, config) whole; ErrLimit when it is larger than `maxSize`, so a stranger cannot make us buffer a layer. */
  readBytes(digest: Digest, maxSize: number): Promise<Buffer>;
}

export interface IngestOptions {
  /** What the content must be: a mismatch fails with ErrDigestMismatch / ErrSizeMismatch and nothing becomes visible. */
  digest?: Digest;
  size?: number;
  /**
   * Continue an interrupted ingest of the same ref: the source yields the content from this offset on. It must not
   * exceed `ingestStatus(ref).offset` (data beyond it is discarded). Without it an ingest starts from zero.
   */
  resumeFrom?: number;
}

export interface IngestResult extends BlobInfo {
  /** False when the store already held the blob (the source may then not have been read at all). */
  created: boolean;
}

export interface IngestStatus {
  ref: string;
  /** Bytes kept so far: resume with `resumeFrom` at most this. */
  offset: number;
  startedAt: Date;
  updatedAt: Date;
}

/**
 * Writes blobs. An ingest is named by a caller-chosen `ref` (one writer per ref at a time, across processes);
 * its partial data survives an interrupted source so the ingest can be resumed.
 */
export interface Ingester {
  ingest(ref: string, source: AsyncIterable<Buffer> | Iterable<Buffer>, opts?: IngestOptions): Promise<IngestResult>;
  /** The kept state of an unfinished ingest, or null. */
  ingestStatus(ref: string): Promise<IngestStatus | null>;
  /** Drop an unfinished ingest's data; no-op when there is none. */
  abortIngest(ref: string): Promise<void>;
}

export interface ContentStore extends Provider, Ingester {
  /** ErrNotFound when absent. */
  delete(digest: Digest): Promise<void>;
  list(): AsyncIterable<BlobInfo>;
  /**
   * Delete every blob not in `keep`; returns how many were removed. The caller keeps in `keep` whatever it still
   * needs, including blobs a concurrent operation is about to reference.
   */
  gc(keep: ReadonlySet<Digest>): Promise<number>;
}
