import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isErrno } from '../errors.js';
import { writeFileAtomic } from '../util/atomic.js';
import { withFileLock } from '../util/lock.js';
import { digestHex, type Digest } from '../util/digest.js';

/** A compressed blob known to hold a layer: where it was seen, so a push can skip or mount it. */
export interface BlobSource {
  digest: Digest;
  size: number;
  mediaType: string;
  /** `registry/path` of a repository that has the blob (pulled from or pushed to). */
  repository: string;
}

const MAX_SOURCES = 50;

/**
 * Docker's `distribution/v2metadata-by-diffid`: for each layer (by diffID) the compressed blobs it travelled as
 * and the repositories holding them. Pushes use it to skip blobs a registry has and to mount across repositories.
 */
export class BlobSources {
  private readonly dir: string;

  constructor(root: string, driverName: string) {
    this.dir = join(root, 'image', driverName, 'distribution', 'v2metadata-by-diffid', 'sha256');
  }

  async get(diffID: Digest): Promise<BlobSource[]> {
    try {
      const v = JSON.parse(await readFile(join(this.dir, digestHex(diffID)), 'utf8')) as unknown;
      return Array.isArray(v) ? (v as BlobSource[]) : [];
    } catch (e) {
      if (isErrno(e, 'ENOENT') || e instanceof SyntaxError) return [];
      throw e;
    }
  }

  async add(diffID: Digest, src: BlobSource): Promise<void> {
    const path = join(this.dir, digestHex(diffID));
    await withFileLock(`${path}.lock`, async () => {
      const list = (await this.get(diffID)).filter((s) => !(s.digest === src.digest && s.repository === src.repository));
      list.unshift(src);
      await writeFileAtomic(path, JSON.stringify(list.slice(0, MAX_SOURCES)));
    });
  }
}
