import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Driver, Change } from '../driver/driver.js';
import { populateThroughGet } from '../driver/populate.js';
import { Digester, digestHex, parseDigest, type Digest } from '../util/digest.js';
import { fsyncDir } from '../util/atomic.js';
import { withFileLock } from '../util/lock.js';
import { readOptionalSync } from '../util/read-optional.js';
import { corrupt, digestMismatch, isErrno, isStrataError, limit, notFound } from '../errors.js';
import { chainID } from './chain-id.js';
import { TarSplitWriter, tarSplitStream } from './tar-split.js';

/** Docker's layer store limit: 125 image layers, leaving room for a container's init and rw layers under 128 lowers. */
export const MAX_LAYER_DEPTH = 125;

export interface Layer {
  chainID: Digest;
  diffID: Digest;
  parent: Digest | null;
  /** The driver's directory name: random, as in Docker, never a content hash. */
  cacheID: string;
  /** Bytes of file content the layer holds. */
  size: number;
  /** Length of the uncompressed layer tar. */
  tarSize: number;
  depth: number;
}

/** A container's two private layers above its image. */
export interface MountRecord {
  container: string;
  mountID: string;
  initID: string;
  /** Chain id of the image's top layer, or null for an image with no layers. */
  parent: Digest | null;
}

const randomID = () => randomBytes(32).toString('hex');

/**
 * Layers by chain id, on disk as Docker keeps them: `image/<driver>/layerdb/sha256/<chain>/{diff,parent,
 * size,cache-id,...}` and `layerdb/mounts/<container>/{mount-id,init-id,parent}`. A layer shared by any
 * number of images exists once. References are derived, not counted: a layer stays while an image, a
 * child layer or a container mount names it, which survives crashes and concurrent processes.
 */
export class LayerStore {
  readonly dir: string;
  private readonly lockPath: string;

  constructor(
    root: string,
    readonly driver: Driver,
  ) {
    this.dir = join(root, 'image', driver.name, 'layerdb');
    this.lockPath = join(root, 'image', driver.name, 'layerdb.lock');
  }

  private layerDir(chain: Digest): string {
    return join(this.dir, 'sha256', digestHex(chain));
  }

  async init(): Promise<void> {
    await mkdir(join(this.dir, 'sha256'), { recursive: true });
    await mkdir(join(this.dir, 'mounts'), { recursive: true });
    await mkdir(join(this.dir, 'tmp'), { recursive: true });
  }

  lock<T>(fn: () => Promise<T>): Promise<T> {
    return withFileLock(this.lockPath, fn);
  }

  async get(chain: Digest): Promise<Layer> {
    const [diff, cacheID, size, tarSize, depth] = this.readFields(chain, ['diff', 'cache-id', 'size', 'tar-size', 'depth']) as [string, string, string, string, string];
    const parent = readOptionalSync(join(this.layerDir(chain), 'parent'));
    return {
      chainID: chain,
      diffID: parseDigest(diff.trim()),
      parent: parent === null ? null : parseDigest(parent.trim()),
      cacheID: cacheID.trim(),
      size: Number(size),
      tarSize: Number(tarSize),
      depth: Number(depth),
    };
  }

  /** Fields of a registered layer's record; a missing layer is ErrNotFound. */
  private readFields(chain: Digest, names: string[]): string[] {
    const dir = this.layerDir(chain);
    try {
      return names.map((f) => readFileSync(join(dir, f), 'utf8'));
    } catch (e) {
      if (isErrno(e, 'ENOENT')) throw notFound(`layer ${chain} not found`);
      throw e;
    }
  }

  async has(chain: Digest): Promise<boolean> {
    return this.get(chain).then(
      () => true,
      (e) => {
        if (e.code === 'ErrNotFound') return false;
        throw e;
      },
    );
  }

  async list(): Promise<Layer[]> {
    const names = await readdir(join(this.dir, 'sha256'));
    const layers = await Promise.all(names.filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => this.get(`sha256:${n}` as Digest)));
    return layers;
  }

  /** Whether register applies a layer before its parent is registered (the driver chains it afterwards). */
  get appliesBeforeParent(): boolean {
    return this.driver.setParent !== undefined;
  }

  /**
   * Apply an uncompressed layer tar on top of `parent`. The layer becomes visible only complete and
   * verified; when its chain id exists already the new copy is dropped and the existing layer returned.
   * With `parentReady` (the parent is still being registered), a driver that can chain a filled layer
   * afterwards (setParent) applies at once and waits only to chain; any other waits before applying.
   */
  async register(tar: Readable, parent: Digest | null, expectedDiffID?: Digest, parentReady?: Promise<unknown>): Promise<Layer> {
    const early = parentReady !== undefined && parent !== null && this.appliesBeforeParent;
    if (parentReady !== undefined && !early) await parentReady;
    const parentLayer = parent === null || early ? null : await this.get(parent);
    let depth = checkDepth((parentLayer?.depth ?? 0) + 1);
    const cacheID = randomID();
    const tmp = join(this.dir, 'tmp', tmpName(cacheID));
    // Intent first: a crash from here on leaves a tmp entry naming the driver directory to reap.
    writeRecord(tmp, { 'cache-id': cacheID });
    const split = new TarSplitWriter(join(tmp, 'tar-split.ndjson.gz'));
    try {
      await this.driver.create(cacheID, parentLayer?.cacheID ?? null);
      const digester = new Digester();
      // Chunks leave one by one (object mode): async iteration of a byte stream concatenates whatever is buffered.
      const hashing = new Transform({
        writableHighWaterMark: 1 << 20,
        readableObjectMode: true,
        readableHighWaterMark: 4,
        transform(chunk: Buffer, _enc, cb) {
          digester.update(chunk);
          cb(null, chunk);
        },
      });
      const source = pipeline(tar, hashing);
      source.catch(() => undefined); // awaited below; a failure also surfaces through applyDiff
      const size = await this.driver.applyDiff(cacheID, parentLayer?.cacheID ?? null, hashing, {
        onEntry: (e) => split.entry(e.headerBytes, e.header.name, e.header.type === 'file' ? e.header.size : 0),
        onTrailer: (b) => split.trailer(b),
      });
      // Bytes after the end-of-archive marker are part of the diffID too.
      hashing.resume();
      await source;
      await split.close();
      const diffID = await digester.digest();
      if (expectedDiffID !== undefined && diffID !== expectedDiffID) {
        throw digestMismatch(`layer content does not match its diff_id: expected ${expectedDiffID}, got ${diffID}`);
      }
      const chain = chainID(parent, diffID);
      if (early) {
        await parentReady;
        const p = await this.get(parent);
        depth = checkDepth(p.depth + 1);
        await this.driver.setParent!(cacheID, p.cacheID);
      }
      writeRecord(tmp, { diff: diffID, ...(parent !== null ? { parent } : {}), size: String(size), 'tar-size': String(digester.size), depth: String(depth) });
      const existing = await this.lock(async () => {
        if (await this.has(chain)) return true;
        await fsyncDir(tmp);
        await rename(tmp, this.layerDir(chain));
        await fsyncDir(join(this.dir, 'sha256'));
        return false;
      });
      if (existing) await this.discard(cacheID, tmp);
      return await this.get(chain);
    } catch (e) {
      tar.destroy();
      await split.abort();
      await this.discard(cacheID, tmp);
      throw e;
    }
  }

  private async discard(cacheID: string, tmp: string): Promise<void> {
    await this.driver.remove(cacheID).catch(() => undefined);
    await rm(tmp, { recursive: true, force: true });
  }

  /** The layer's tar, byte for byte as it was applied, verified against its diffID while streaming. */
  async tarStream(chain: Digest): Promise<Readable> {
    const layer = await this.get(chain);
    const driver = this.driver;
    // The layer's own files, where the driver keeps them readable without a mount; else its mounted view.
    const own = (await driver.ownFilesDir?.(layer.cacheID)) ?? null;
    const root = own ?? (await driver.get(layer.cacheID));
    const release = () => (own === null ? driver.put(layer.cacheID) : Promise.resolve());
    const digester = new Digester();
    const body = tarSplitStream(join(this.layerDir(chain), 'tar-split.ndjson.gz'), root);
    const exists = () => this.has(chain);
    async function* verified(): AsyncGenerator<Buffer> {
      let failed = false;
      try {
        for await (const chunk of body) {
          digester.update(chunk);
          yield chunk;
        }
        const got = await digester.digest();
        if (got !== layer.diffID) throw corrupt(`could not verify layer data for ${chain}: expected ${layer.diffID}, got ${got}`);
      } catch (e) {
        failed = true;
        // An image removal in another process released the layer while it was read (a save or push of it).
        if (!(await exists())) throw notFound(`layer ${chain} was removed while it was being read`, e);
        throw e;
      } finally {
        // A layer removed meanwhile has nothing left to put; and what failed the read is the error to report.
        await release().catch((e) => {
          if (!failed && !isStrataError(e, 'ErrNotFound')) throw e;
        });
      }
    }
    return Readable.from(verified(), { objectMode: false });
  }

  /** Who holds a layer: images (given by the caller), child layers, container mounts. */
  private async isReferenced(chain: Digest, imageTops: Set<Digest>): Promise<boolean> {
    if (imageTops.has(chain)) return true;
    for (const l of await this.list()) if (l.parent === chain) return true;
    for (const m of await this.listMounts()) if (m.parent === chain) return true;
    return false;
  }

  /**
   * Delete the layer and then its parents, each as long as nothing references it. `imageTops` are the
   * top chain ids of every image still in the store. Returns the deleted layers.
   */
  async releaseUnreferenced(chain: Digest | null, imageTops: Set<Digest>): Promise<Layer[]> {
    const deleted: Layer[] = [];
    while (chain !== null) {
      const layer: Layer | undefined = await this.lock(async () => {
        const layer = await this.get(chain!).catch(() => null);
        if (layer === null || (await this.isReferenced(chain!, imageTops))) return undefined;
        // Rename first so a crash never leaves a half-deleted layer looking whole.
        const removing = `${this.layerDir(chain!)}-${randomBytes(4).toString('hex')}-removing`;
        await rename(this.layerDir(chain!), removing);
        await this.driver.remove(layer.cacheID);
        await rm(removing, { recursive: true, force: true });
        return layer;
      });
      if (layer === undefined) break;
      deleted.push(layer);
      chain = layer.parent;
    }
    return deleted;
  }

  // --- container layers ---------------------------------------------------------------------------

  private mountDir(container: string): string {
    return join(this.dir, 'mounts', container);
  }

  /**
   * Create a container's init layer (`<mount-id>-init`, filled by `initFn`) and its read-write layer
   * above it, on the image's top layer.
   */
  async createRWLayer(container: string, parent: Digest | null, initFn: (root: string) => Promise<void>, storageOpt?: Record<string, string>): Promise<MountRecord> {
    // Only the driver id is needed: one read instead of the whole record, on the path of every create.
    const parentCacheID = parent === null ? null : this.readFields(parent, ['cache-id'])[0]!.trim();
    const mountID = randomID();
    const initID = `${mountID}-init`;
    const dir = this.mountDir(container);
    const tmp = join(this.dir, 'tmp', tmpName(`mount-${mountID}`));
    writeRecord(tmp, { 'mount-id': mountID, 'init-id': initID, ...(parent !== null ? { parent } : {}) });
    try {
      await this.driver.createReadWrite(initID, parentCacheID);
      await (this.driver.populate ? this.driver.populate(initID, initFn) : populateThroughGet(this.driver, initID, initFn));
      await this.driver.createReadWrite(mountID, initID, { storageOpt });
      // No fsync: syncing the directory would not make the record's files durable, and Docker writes its mount
      // records plainly too; the container record written after it is the synced commit point.
      await this.lock(async () => renameSync(tmp, dir));
    } catch (e) {
      await this.driver.remove(mountID).catch(() => undefined);
      await this.driver.remove(initID).catch(() => undefined);
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
    return { container, mountID, initID, parent };
  }

  async getMount(container: string): Promise<MountRecord> {
    const dir = this.mountDir(container);
    try {
      const [mountID, initID] = await Promise.all([readFile(join(dir, 'mount-id'), 'utf8'), readFile(join(dir, 'init-id'), 'utf8')]);
      const parent = await readFile(join(dir, 'parent'), 'utf8').catch(() => null);
      return { container, mountID: mountID.trim(), initID: initID.trim(), parent: parent === null ? null : parseDigest(parent.trim()) };
    } catch (e) {
      if (isErrno(e, 'ENOENT')) throw notFound(`no read-write layer for container ${container}`);
      throw e;
    }
  }

  async listMounts(): Promise<MountRecord[]> {
    const names = await readdir(join(this.dir, 'mounts'));
    return Promise.all(names.map((n) => this.getMount(n)));
  }

  /** Changes of the container's own layer: the init layer is the base, so its files never show. */
  async changes(m: MountRecord): Promise<Change[]> {
    return this.driver.changes(m.mountID, m.initID);
  }

  async diff(m: MountRecord): Promise<Readable> {
    return this.driver.diff(m.mountID, m.initID);
  }

  async rwSize(m: MountRecord): Promise<number> {
    return this.driver.diffSize(m.mountID, m.initID);
  }

  async releaseRWLayer(m: MountRecord): Promise<void> {
    await this.lock(async () => {
      const removing = `${this.mountDir(m.container)}-removing`;
      await rename(this.mountDir(m.container), removing).catch((e) => {
        if (!isErrno(e, 'ENOENT')) throw e;
      });
      await this.driver.remove(m.mountID);
      await this.driver.remove(m.initID);
      await rm(removing, { recursive: true, force: true });
    });
  }

  /** Reap what crashed registrations left: tmp entries whose process is gone, and their driver dirs. */
  async cleanupOrphans(): Promise<number> {
    let n = 0;
    const tmpDir = join(this.dir, 'tmp');
    for (const name of await readdir(tmpDir)) {
      const pid = await tmpOwner(tmpDir, name);
      if (pid !== null && isAlive(pid)) continue;
      for (const idFile of ['cache-id', 'mount-id', 'init-id']) {
        const id = await readFile(join(tmpDir, name, idFile), 'utf8').catch(() => null);
        if (id !== null) await this.driver.remove(id.trim()).catch(() => undefined);
      }
      await rm(join(tmpDir, name), { recursive: true, force: true });
      n++;
    }
    return n;
  }
}

/** A metadata record: one small file per field (Docker's layerdb form), written synchronously (tiny, many). */
function writeRecord(dir: string, fields: Record<string, string>): void {
  mkdirSync(dir, { recursive: true });
  for (const [name, value] of Object.entries(fields)) writeFileSync(join(dir, name), value);
}

/**
 * A tmp entry's name: what it holds, then the pid of the process making it (alive: not an orphan). In the name,
 * not in a file of the entry, so nothing is written and removed again before the entry is renamed into place.
 */
const tmpName = (what: string) => `${what}.${process.pid}`;

/** The pid making a tmp entry: from its name, or from the `pid` file earlier versions wrote into it. */
async function tmpOwner(tmpDir: string, name: string): Promise<number | null> {
  const m = /\.(\d+)$/.exec(name);
  if (m) return Number(m[1]);
  const pid = await readFile(join(tmpDir, name, 'pid'), 'utf8').catch(() => null);
  return pid === null ? null : Number(pid);
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return isErrno(e, 'EPERM');
  }
}

function checkDepth(depth: number): number {
  if (depth > MAX_LAYER_DEPTH) throw limit(`max depth exceeded: an image can have at most ${MAX_LAYER_DEPTH} layers`);
  return depth;
}
