import type { Readable } from 'node:stream';
import type { TarHeader } from '../archive/tar/tar-header.js';
import type { UnionFs } from '../union/union-fs.js';

/** A filesystem change between a layer and its parent, as `docker diff` reports it. */
export interface Change {
  /** Absolute path inside the container root, e.g. `/etc/hosts`. */
  path: string;
  kind: 'A' | 'C' | 'D';
}

/** Observers of a layer tar while it is applied: the layer store records headers for byte-exact re-export. */
export interface ApplyHooks {
  onEntry?: (entry: { header: TarHeader; headerBytes: Buffer }) => void;
  onTrailer?: (bytes: Buffer) => void;
}

export interface CreateOpts {
  /** Per-layer storage options (`size` for overlay2 with xfs project quota). */
  storageOpt?: Record<string, string>;
}

/**
 * A storage driver in Docker's graphdriver model. Ids are the random cache ids the layer store
 * picks; the driver never sees digests. Every method is safe to call from two processes on one
 * data-root (the driver locks what it must).
 */
export interface Driver {
  readonly name: string;
  /** `<data-root>/<driver name>` */
  readonly home: string;
  /** A read-only layer; `parent` is the id of the layer below or null for a base layer. */
  create(id: string, parent: string | null, opts?: CreateOpts): Promise<void>;
  /** A writable layer (a container's init or read-write layer). */
  createReadWrite(id: string, parent: string | null, opts?: CreateOpts): Promise<void>;
  remove(id: string): Promise<void>;
  /** Make the layer's full union view available (mounting if needed) and return its root path. Reference counted. */
  get(id: string): Promise<string>;
  /** Release one `get`; the last one unmounts. */
  put(id: string): Promise<void>;
  /**
   * Optional: the layer's full view as a userspace union (src/union), with no mount and no root;
   * writable when `id` is a read-write layer. Without it, callers mount with get() and use the path.
   */
  openFs?(id: string): Promise<UnionFs>;
  /**
   * Optional: a host directory holding the layer's own files (what its applied tar wrote) at their paths,
   * readable with no mount; null when it cannot be read there right now. The layer store reads a layer's
   * file bodies there to regenerate its tar (save, push). Without it, or on null, it uses get()/put().
   */
  ownFilesDir?(id: string): Promise<string | null>;
  /**
   * Optional: fill a just-created read-write layer once (a container's init layer) more cheaply than
   * get/fill/put. Without it the layer store does get/fill/put.
   */
  populate?(id: string, fill: (root: string) => Promise<void>): Promise<void>;
  exists(id: string): Promise<boolean>;
  /** Lines `info` shows under the driver, e.g. [['Backing Filesystem','extfs'], ['Supports d_type','true']]. */
  status(): Promise<Array<[string, string]>>;
  /** `GraphDriver.Data` of inspect (overlay2: LowerDir, UpperDir, MergedDir, WorkDir). */
  metadata(id: string): Promise<Record<string, string>>;
  /** The layer's own changes as an uncompressed OCI layer tar (whiteouts as `.wh.` entries). */
  diff(id: string, parent: string | null): Promise<Readable>;
  changes(id: string, parent: string | null): Promise<Change[]>;
  /** Apply an uncompressed OCI layer tar onto the (empty, just created) layer; hooks go to applyLayer; returns the bytes of content applied. */
  applyDiff(id: string, parent: string | null, tar: Readable, hooks?: ApplyHooks): Promise<number>;
  /**
   * Optional: chain a layer that was created (`parent` null) and filled before its parent existed. Offered by
   * drivers whose applyDiff records whiteouts instead of applying them to a copy of the parent, so a pull can
   * apply an image's layers concurrently and chain them in order afterwards (containerd's "rebase").
   */
  setParent?(id: string, parent: string): Promise<void>;
  /** Bytes the layer adds on top of its parent. */
  diffSize(id: string, parent: string | null): Promise<number>;
  /** Unmount everything this process mounted; called on shutdown. */
  cleanup(): Promise<void>;
}

export interface DriverOptions {
  /** `<data-root>` — the driver keeps its state in `<root>/<name>`. */
  root: string;
  /** `storage-opts` from the config file / flags, already split into key/value. */
  options: Record<string, string>;
}

/** Each driver folder exports one of these; `init` fails with ErrCapability when the machine cannot run it. */
export interface DriverFactory {
  readonly name: string;
  init(opts: DriverOptions): Promise<Driver>;
}
