import {
  chmodSync,
  closeSync,
  constants as C,
  fchmodSync,
  fchownSync,
  lchownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { corrupt, isErrno } from '../errors.js';
import { CREATE_KIND, CREATE_META_FIELDS, native } from '../native/native.js';
import type { TarHeader } from './tar/tar-header.js';
import { readTar, type TarEntry, type TarLimits } from './tar/tar-reader.js';
import { cleanEntryName, relBasename, relDirname, SafeParents } from './root-path.js';
import { OVERLAY_OPAQUE_XATTR, WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE, WHITEOUT_PREFIX } from './whiteout.js';
import { checkHardlinkTarget, DirTimes, entryBase, explainEntryError, hardlinkTarget, keepsExisting, metaSteps, setEntryTimes, skipsNode, xattrFailureTolerated } from './apply-rules.js';

/**
 * How deletions land on disk: overlay's char 0:0 / opaque xattr, AUFS's `.wh.` files kept as the tar
 * has them, or by removing the files (every driver whose layers are full copies).
 */
export type WhiteoutFormat = 'overlay' | 'aufs' | 'naive';

export interface ApplyOptions {
  whiteouts: WhiteoutFormat;
  /**
   * The caller cannot change owners, make device nodes or set privileged xattrs (not root): entries keep
   * the caller's ownership and devices are skipped, as Docker's archive does in a user namespace.
   */
  rootless?: boolean;
  /** Called with every entry before it is applied (the layer store records headerBytes for byte-exact re-export). */
  onEntry?: (e: TarEntry) => void;
  onTrailer?: (b: Buffer) => void;
  limits?: TarLimits;
}

const FILE_FLAGS = C.O_WRONLY | C.O_CREAT | C.O_EXCL | C.O_NOFOLLOW;
const DIR_FLAGS = C.O_RDONLY | C.O_DIRECTORY | C.O_NOFOLLOW;
const NODE_TYPE = { char: C.S_IFCHR, block: C.S_IFBLK, fifo: C.S_IFIFO } as const;
const OPAQUE_VALUE = Buffer.from('y');
/** (uid_t)-1: chown(2) leaves that id as it is (what a rootless apply asks of the batched writer). */
const KEEP_ID = 0xffffffff;

/**
 * Apply an uncompressed OCI layer tar onto root (Docker's UnpackLayer); returns the total size of file
 * content applied. The root belongs to this call while it runs: nothing else writes there, so a parent
 * chain checked once by lstat stays valid until this call itself replaces a component.
 */
export async function applyLayer(root: string, tar: AsyncIterable<Buffer>, opts: ApplyOptions): Promise<{ size: number }> {
  const applier = new Applier(root, opts.whiteouts, opts.rootless ?? false);
  try {
    for await (const entry of readTar(tar, { limits: opts.limits, onTrailer: opts.onTrailer })) {
      opts.onEntry?.(entry);
      const pending = applier.apply(entry);
      if (pending) await pending;
    }
    await applier.finish();
  } catch (e) {
    // Nothing may still be writing under root once this call has failed: the caller removes it.
    await applier.abandon();
    throw e;
  }
  return { size: applier.size };
}

/**
 * Small files, directories and symlinks without xattrs are created in batches on a worker thread
 * (native.createNodes) while parsing goes on. Batches run one after another, in tar order: a batch may hold the
 * directory that a later batch fills.
 */
const BATCH_FILES = 64;
const BATCH_BYTES = 1 << 20;
const BATCHED_FILE_MAX = 4 << 20;
const MAX_BATCHES_IN_FLIGHT = 2;

type NodeKind = keyof typeof CREATE_KIND;

interface NodeJob {
  kind: NodeKind;
  rel: string;
  path: string;
  header: TarHeader;
  /** A file's content, a symlink's target. */
  body: Buffer;
}

/** Where a batch stopped: the node that failed (`error`), or the first one not run because an earlier batch failed. */
type Stop = { index: number; error: Error | null };

interface Batch {
  jobs: NodeJob[];
  /** null once every node is made; never rejects. */
  done: Promise<Stop | null>;
}

/** Errors that already name their entry (a batch fails after later entries were read). */
const explained = new WeakSet<object>();

function explainOnce(e: unknown, name: string): unknown {
  if (typeof e === 'object' && e !== null && explained.has(e)) return e;
  const x = explainEntryError(e, name);
  if (typeof x === 'object' && x !== null) explained.add(x);
  return x;
}

// Entries outside the batches use synchronous syscalls: a threadpool round trip costs more than the syscall
// itself. Batches run meanwhile; an entry whose path touches a node still in flight waits for it (see conflicts).
class Applier {
  size = 0;
  private batch: NodeJob[] = [];
  private batchBytes = 0;
  private readonly inFlight: Batch[] = [];
  /** Queued and in-flight nodes (true for a directory), and how many of them sit under each directory. */
  private readonly pending = new Map<string, boolean>();
  private readonly pendingUnder = new Map<string, number>();
  private readonly parents: SafeParents;
  /** Naive format: what this layer wrote, which an opaque directory keeps. */
  private readonly unpacked: Set<string> | null;
  private readonly dirTimes = new DirTimes();
  private readonly rootBytes: number;

  constructor(
    private readonly root: string,
    private readonly format: WhiteoutFormat,
    private readonly rootless: boolean,
  ) {
    this.parents = new SafeParents(root);
    this.rootBytes = Buffer.byteLength(root) + 1;
    this.unpacked = format === 'naive' ? new Set() : null;
  }

  apply(entry: TarEntry): Promise<void> | void {
    try {
      const h = entry.header;
      const rel = cleanEntryName(h.name);
      if (this.conflicts(rel, h, batchedKind(h, rel) !== null)) return this.settle(true).then(() => this.applyEntry(entry, rel)).catch((e) => Promise.reject(explainOnce(e, h.name)));
      return this.applyEntry(entry, rel)?.catch((e) => Promise.reject(explainOnce(e, h.name)));
    } catch (e) {
      throw explainOnce(e, entry.header.name);
    }
  }

  private applyEntry(entry: TarEntry, rel: string): Promise<void> | void {
    const h = entry.header;
    const base = entryBase(h, rel, this.rootBytes);
    if (base.startsWith(WHITEOUT_PREFIX)) return this.whiteout(rel, base, entry);
    const path = rel === '' ? this.root : this.parents.ensure(relDirname(rel)) + '/' + base;
    this.unpacked?.add(rel);
    switch (h.type) {
      case 'file':
        return this.file(rel, path, entry);
      case 'directory':
        if (batchedKind(h, rel) === null) return this.directory(rel, path, h);
        this.dirTimes.set(rel, h);
        this.parents.made(rel);
        return this.queue({ kind: 'directory', rel, path, header: h, body: EMPTY });
      case 'symlink':
        if (batchedKind(h, rel) === null) return this.symlink(rel, path, h);
        return this.queue({ kind: 'symlink', rel, path, header: h, body: Buffer.from(h.linkname) });
      case 'hardlink':
        return this.hardlink(rel, path, h);
      case 'char':
      case 'block':
      case 'fifo':
        if (skipsNode(h, this.rootless)) return;
        this.create(rel, path, () => native.mknod(path, NODE_TYPE[h.type as keyof typeof NODE_TYPE] | h.mode, h.devmajor, h.devminor));
        return this.pathMetadata(path, h, true);
    }
  }

  async finish(): Promise<void> {
    this.submit();
    await this.settle(true);
    for (const [rel, h] of this.dirTimes.deepestFirst()) setEntryTimes(rel === '' ? this.root : this.root + '/' + rel, h);
  }

  /** After a failure: wait until no batch is writing any more, ignoring their outcome. */
  async abandon(): Promise<void> {
    await Promise.all(this.inFlight.splice(0).map((b) => b.done));
  }

  /**
   * Whether the entry must wait for the nodes in flight: it names one of them or a directory holding one; it lies
   * below a pending file or symlink, or (unless it is batched itself, and so made after them) below a pending
   * directory; a hardlink to a pending node or below one; a whiteout (it removes trees). Unrelated paths proceed.
   */
  private conflicts(rel: string, h: TarHeader, batched: boolean): boolean {
    if (this.pending.size === 0) return false;
    if (this.pending.has(rel) || this.pendingUnder.has(rel) || this.pendingAbove(rel, batched)) return true;
    if (h.type === 'hardlink') {
      const target = cleanEntryName(h.linkname);
      return this.pending.has(target) || this.pendingAbove(target, false);
    }
    return relBasename(rel).startsWith(WHITEOUT_PREFIX);
  }

  private pendingAbove(rel: string, batched: boolean): boolean {
    for (let p = relDirname(rel); p !== ''; p = relDirname(p)) {
      const dir = this.pending.get(p);
      if (dir === false || (dir === true && !batched)) return true;
    }
    // A missing parent is made here, at once: not inside a directory that is still queued.
    const missing = batched ? this.parents.firstUnchecked(relDirname(rel)) : null;
    return missing !== null && this.pending.get(relDirname(missing)) === true;
  }

  private queue(job: NodeJob): Promise<void> | void {
    this.batch.push(job);
    this.batchBytes += job.body.length;
    this.pending.set(job.rel, job.kind === 'directory');
    for (let p = relDirname(job.rel); p !== ''; p = relDirname(p)) this.pendingUnder.set(p, (this.pendingUnder.get(p) ?? 0) + 1);
    this.size += job.header.size;
    if (this.batch.length < BATCH_FILES && this.batchBytes < BATCH_BYTES) return;
    this.submit();
    if (this.inFlight.length > MAX_BATCHES_IN_FLIGHT) return this.settle(false);
  }

  private submit(): void {
    if (this.batch.length === 0) return;
    const jobs = this.batch;
    const meta = new Float64Array(jobs.length * CREATE_META_FIELDS);
    for (const [i, { kind, header: h }] of jobs.entries()) {
      const a = h.atime ?? h.mtime;
      const uid = this.rootless ? KEEP_ID : h.uid;
      const gid = this.rootless ? KEEP_ID : h.gid;
      meta.set([CREATE_KIND[kind], h.mode, uid, gid, a.sec, a.nsec, h.mtime.sec, h.mtime.nsec], i * CREATE_META_FIELDS);
    }
    const run = (): Promise<Stop | null> =>
      native.createNodes(jobs.map((j) => j.path), jobs.map((j) => j.body), meta).then(
        () => null,
        (e: Error & { index?: number }) => ({ index: e.index ?? 0, error: e }),
      );
    const previous = this.inFlight.at(-1)?.done;
    const done = previous ? previous.then((stop) => (stop === null ? run() : { index: 0, error: null })) : run();
    this.inFlight.push({ jobs, done });
    this.batch = [];
    this.batchBytes = 0;
  }

  /**
   * Wait for the oldest batch (or all). A file the worker could not create because a directory is in its way
   * is redone here, once every batch has stopped: replacing a directory is a tree removal.
   */
  private async settle(all: boolean): Promise<void> {
    if (all) this.submit();
    const batches = this.inFlight.splice(0, all ? this.inFlight.length : 1);
    const stops = await Promise.all(batches.map((b) => b.done));
    if (stops.some((f) => f !== null)) {
      const rest = this.inFlight.splice(0);
      batches.push(...rest);
      stops.push(...(await Promise.all(rest.map((b) => b.done))));
    }
    for (const [k, { jobs }] of batches.entries()) {
      const stop = stops[k];
      const from = stop === null ? jobs.length : stop.index;
      if (stop?.error && !isErrno(stop.error, 'EEXIST')) throw explainOnce(stop.error, jobs[from]!.header.name);
      for (let i = from; i < jobs.length; i++) {
        const j = jobs[i]!;
        try {
          this.makeNow(j);
        } catch (e) {
          throw explainOnce(e, j.header.name);
        }
      }
      for (const j of jobs) this.settled(j.rel);
    }
  }

  /** A batched node made here after all, once no batch runs: what was in its way may be a tree to remove. */
  private makeNow(j: NodeJob): void {
    if (j.kind === 'file') this.writeFile(j.rel, j.path, j.header, j.body);
    else if (j.kind === 'directory') this.directory(j.rel, j.path, j.header);
    else this.symlink(j.rel, j.path, j.header);
  }

  private settled(rel: string): void {
    this.pending.delete(rel);
    for (let p = relDirname(rel); p !== ''; p = relDirname(p)) {
      const n = this.pendingUnder.get(p)! - 1;
      if (n === 0) this.pendingUnder.delete(p);
      else this.pendingUnder.set(p, n);
    }
  }

  private file(rel: string, path: string, entry: TarEntry): Promise<void> | void {
    const h = entry.header;
    if (batchedKind(h, rel) !== null) {
      const whole = h.size === 0 ? EMPTY : entry.bufferedBody();
      if (whole !== null) return this.queue({ kind: 'file', rel, path, header: h, body: whole });
      return collect(entry.body(), h.size).then((body) => this.queue({ kind: 'file', rel, path, header: h, body }));
    }
    const whole = entry.bufferedBody();
    if (whole === null) return this.writeBody(this.openNew(rel, path), path, entry);
    this.writeFile(rel, path, h, whole);
    this.size += h.size;
  }

  /** A new file, replacing whatever is in the way. */
  private openNew(rel: string, path: string): number {
    try {
      return openSync(path, FILE_FLAGS, 0o600);
    } catch (e) {
      if (!isErrno(e, 'EEXIST')) throw e;
      this.remove(rel, path);
      return openSync(path, FILE_FLAGS, 0o600);
    }
  }

  private writeFile(rel: string, path: string, h: TarHeader, body: Buffer): void {
    const fd = this.openNew(rel, path);
    try {
      writeAll(fd, body);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    this.closeFile(fd, path, h);
  }

  private async writeBody(fd: number, path: string, entry: TarEntry): Promise<void> {
    try {
      for await (const chunk of entry.body()) writeAll(fd, chunk);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
    this.closeFile(fd, path, entry.header);
    this.size += entry.header.size;
  }

  private closeFile(fd: number, path: string, h: TarHeader): void {
    try {
      this.ownerXattrsMode(fd, path, h);
    } finally {
      closeSync(fd);
    }
    setEntryTimes(path, h);
  }

  private ownerXattrsMode(fd: number, path: string, h: TarHeader): void {
    for (const s of metaSteps(h, this.rootless, true)) {
      if (s.op === 'chown') fchownSync(fd, s.uid, s.gid);
      else if (s.op === 'chmod') fchmodSync(fd, s.mode);
      else this.xattr(path, s.name, s.value);
    }
  }

  private directory(rel: string, path: string, h: TarHeader): void {
    if (rel !== '') {
      try {
        mkdirSync(path, 0o700);
      } catch (e) {
        if (!isErrno(e, 'EEXIST')) throw e;
        if (!keepsExisting(h, lstatSync(path))) {
          this.remove(rel, path);
          mkdirSync(path, 0o700);
        }
      }
    }
    const fd = openSync(path, DIR_FLAGS);
    try {
      this.ownerXattrsMode(fd, path, h);
    } finally {
      closeSync(fd);
    }
    this.dirTimes.set(rel, h);
  }

  private symlink(rel: string, path: string, h: TarHeader): void {
    this.create(rel, path, () => symlinkSync(h.linkname, path));
    this.pathMetadata(path, h, false);
  }

  private hardlink(rel: string, path: string, h: TarHeader): void {
    const target = hardlinkTarget(h);
    // The target's parents must be real directories of this root: a link through a symlink could reach any host file.
    const targetPath = this.parents.check(relDirname(target)) + '/' + relBasename(target);
    checkHardlinkTarget(h, lstatSync(targetPath, { throwIfNoEntry: false }));
    if (target === rel) return;
    // link(2) does not follow a symlink target: linking to a symlink links the symlink itself.
    this.create(rel, path, () => linkSync(targetPath, path));
  }

  /** Metadata for nodes that cannot be opened without side effects (symlinks, devices, fifos): by path, never following. */
  private pathMetadata(path: string, h: TarHeader, chmod: boolean): void {
    // The node was just created by this call, so the path names it and not a link (chmod(2) would follow one).
    for (const s of metaSteps(h, this.rootless, chmod)) {
      if (s.op === 'chown') lchownSync(path, s.uid, s.gid);
      else if (s.op === 'chmod') chmodSync(path, s.mode);
      else this.xattr(path, s.name, s.value);
    }
    setEntryTimes(path, h);
  }

  private xattr(path: string, name: string, value: Buffer): void {
    try {
      native.lsetxattr(path, name, value);
    } catch (e) {
      if (!xattrFailureTolerated(e, this.rootless)) throw e;
    }
  }

  private whiteout(rel: string, base: string, entry: TarEntry): Promise<void> | void {
    const h = entry.header;
    const relDir = relDirname(rel);
    if (base === WHITEOUT_OPAQUE) return this.opaque(rel, relDir, entry);
    if (base.startsWith(WHITEOUT_META_PREFIX)) return; // union metadata (AUFS .wh..wh.plnk ...), not content
    const name = base.slice(WHITEOUT_PREFIX.length);
    if (name === '' || name === '.' || name === '..') throw corrupt(`invalid whiteout entry`);
    const targetRel = relDir === '' ? name : relDir + '/' + name;
    const path = this.parents.ensure(relDir) + '/' + name;
    if (lstatSync(path, { throwIfNoEntry: false }) !== undefined) this.remove(targetRel, path);
    if (this.format === 'naive') return;
    // AUFS keeps the whiteout as the file the tar has.
    if (this.format === 'aufs') return this.file(rel, this.parents.ensure(relDir) + '/' + base, entry);
    native.mknod(path, C.S_IFCHR, 0, 0);
    if (h.uid !== 0 || h.gid !== 0) lchownSync(path, h.uid, h.gid);
  }

  private opaque(rel: string, relDir: string, entry: TarEntry): Promise<void> | void {
    const dir = this.parents.ensure(relDir);
    if (this.format === 'overlay') native.lsetxattr(dir, OVERLAY_OPAQUE_XATTR, OPAQUE_VALUE);
    else if (this.format === 'aufs') return this.file(rel, dir + '/' + WHITEOUT_OPAQUE, entry);
    else this.prune(relDir, dir);
  }

  /** Naive opaque directory: remove what lower layers put there, keep what this layer wrote. */
  private prune(relDir: string, dir: string): void {
    for (const d of readdirSync(dir, { withFileTypes: true })) {
      const rel = relDir === '' ? d.name : relDir + '/' + d.name;
      const path = dir + '/' + d.name;
      if (!this.unpacked!.has(rel)) this.remove(rel, path);
      else if (d.isDirectory()) this.prune(rel, path);
    }
  }

  /** Make a node, replacing whatever is in the way. */
  private create(rel: string, path: string, make: () => void): void {
    try {
      make();
    } catch (e) {
      if (!isErrno(e, 'EEXIST')) throw e;
      this.remove(rel, path);
      make();
    }
  }

  private remove(rel: string, path: string): void {
    if (lstatSync(path).isDirectory()) {
      rmSync(path, { recursive: true, force: true });
      this.parents.forget(rel);
      this.dirTimes.forget(rel);
    } else {
      unlinkSync(path);
    }
  }
}

const EMPTY = Buffer.alloc(0);

/** Whether an entry is made in a batch, as what: files up to BATCHED_FILE_MAX, directories (not the root) and symlinks, without xattrs. */
function batchedKind(h: TarHeader, rel: string): NodeKind | null {
  if (h.xattrs.size > 0) return null;
  if (h.type === 'file') return h.size <= BATCHED_FILE_MAX ? 'file' : null;
  if (h.type === 'directory') return rel === '' ? null : 'directory';
  return h.type === 'symlink' ? 'symlink' : null;
}

async function collect(body: AsyncIterable<Buffer>, size: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const chunk of body) parts.push(chunk);
  return Buffer.concat(parts, size);
}

function writeAll(fd: number, chunk: Buffer): void {
  for (let off = 0; off < chunk.length; ) off += writeSync(fd, chunk, off, chunk.length - off);
}
