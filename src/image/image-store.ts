import { readFileSync } from 'node:fs';
import { mkdir, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic.js';
import { digestHex, parseDigest, sha256, type Digest } from '../util/digest.js';
import { isErrno, notFound } from '../errors.js';
import { parseImageConfig, type ImageConfig } from './manifest.js';
import { withFileLock } from '../util/lock.js';

export interface Image {
  /** sha256 of the config bytes as stored. */
  id: Digest;
  raw: Buffer;
  config: ImageConfig;
}

/**
 * Image configs by id, as Docker's imagedb keeps them: `imagedb/content/sha256/<id>` holds the raw
 * config bytes (the id is their digest), `imagedb/metadata/sha256/<id>/` what is known beside it.
 */
export class ImageStore {
  private readonly dir: string;

  constructor(root: string, driverName: string) {
    this.dir = join(root, 'image', driverName, 'imagedb');
  }

  private contentPath(id: Digest): string {
    return join(this.dir, 'content', 'sha256', digestHex(id));
  }
  private metaDir(id: Digest): string {
    return join(this.dir, 'metadata', 'sha256', digestHex(id));
  }

  /**
   * Serialises what changes which images exist against what holds their layers: publishing an image
   * (publish-image.ts) and deleting images with their layers (rmi, prune), across processes too.
   */
  lock<T>(fn: () => Promise<T>): Promise<T> {
    return withFileLock(`${this.dir}.lock`, fn);
  }

  async init(): Promise<void> {
    await mkdir(join(this.dir, 'content', 'sha256'), { recursive: true });
    await mkdir(join(this.dir, 'metadata', 'sha256'), { recursive: true });
  }

  /** Store a config (validated first); idempotent, as the id is the digest of the bytes. */
  async create(raw: Buffer, parent?: Digest): Promise<Image> {
    const config = parseImageConfig(raw);
    const id = sha256(raw);
    await writeFileAtomic(this.contentPath(id), raw);
    if (parent !== undefined) await this.setMeta(id, 'parent', parent);
    await this.setMeta(id, 'lastUpdated', new Date().toISOString());
    return { id, raw, config };
  }

  private async setMeta(id: Digest, key: string, value: string): Promise<void> {
    await mkdir(this.metaDir(id), { recursive: true });
    await writeFile(join(this.metaDir(id), key), value);
  }

  async getMeta(id: Digest, key: string): Promise<string | undefined> {
    return readFile(join(this.metaDir(id), key), 'utf8').catch((e) => {
      if (isErrno(e, 'ENOENT')) return undefined;
      throw e;
    });
  }

  async parent(id: Digest): Promise<Digest | undefined> {
    const p = await this.getMeta(id, 'parent');
    return p === undefined ? undefined : parseDigest(p.trim());
  }

  async get(id: Digest): Promise<Image> {
    let raw: Buffer;
    try {
      raw = readFileSync(this.contentPath(id));
    } catch (e) {
      if (isErrno(e, 'ENOENT')) throw notFound(`No such image: ${id}`);
      throw e;
    }
    return { id, raw, config: parseImageConfig(raw) };
  }

  async ids(): Promise<Digest[]> {
    const names = await readdir(join(this.dir, 'content', 'sha256'));
    return names.filter((n) => /^[a-f0-9]{64}$/.test(n)).map((n) => `sha256:${n}` as Digest);
  }

  async list(): Promise<Image[]> {
    return Promise.all((await this.ids()).map((id) => this.get(id)));
  }

  /** Find an image by full id, `sha256:` prefix or unique short hex prefix, as docker accepts them. */
  async resolveId(s: string): Promise<Digest | undefined> {
    const hex = s.startsWith('sha256:') ? s.slice(7) : s;
    if (!/^[a-f0-9]{1,64}$/.test(hex)) return undefined;
    const matches = (await this.ids()).filter((id) => digestHex(id).startsWith(hex));
    return matches.length === 1 ? matches[0] : undefined;
  }

  async delete(id: Digest): Promise<void> {
    await rm(this.contentPath(id), { force: true });
    await rm(this.metaDir(id), { recursive: true, force: true });
  }
}
