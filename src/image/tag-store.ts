import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic.js';
import { withFileLock } from '../util/lock.js';
import { isErrno } from '../errors.js';
import type { Digest } from '../util/digest.js';

/** Docker's repositories.json: repository (familiar name) -> reference (`name:tag` or `name@digest`) -> image id. */
type Repositories = Record<string, Record<string, Digest>>;

/** Tags and digests pointing at images, kept as Docker keeps them in `image/<driver>/repositories.json`. */
export class TagStore {
  private readonly path: string;

  constructor(root: string, driverName: string) {
    this.path = join(root, 'image', driverName, 'repositories.json');
  }

  private async read(): Promise<Repositories> {
    try {
      const parsed = JSON.parse(readFileSync(this.path, 'utf8')) as { Repositories?: Repositories };
      return parsed.Repositories ?? {};
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return {};
      throw e;
    }
  }

  /** Read-modify-write under the file's lock, so concurrent processes never lose each other's tags. */
  private update<T>(fn: (repos: Repositories) => T): Promise<T> {
    return withFileLock(`${this.path}.lock`, async () => {
      const repos = await this.read();
      const out = fn(repos);
      await writeFileAtomic(this.path, JSON.stringify({ Repositories: repos }));
      return out;
    });
  }

  /** Point `ref` (in repository `repo`) at `id`; returns the image it pointed at before, if another. */
  set(repo: string, ref: string, id: Digest): Promise<Digest | undefined> {
    return this.update((repos) => {
      const entries = (repos[repo] ??= {});
      const before = entries[ref];
      entries[ref] = id;
      return before !== id ? before : undefined;
    });
  }

  /** Remove `ref`; returns the image it pointed at, if any. */
  delete(repo: string, ref: string): Promise<Digest | undefined> {
    return this.update((repos) => {
      const entries = repos[repo];
      const id = entries?.[ref];
      if (entries && id !== undefined) {
        delete entries[ref];
        if (Object.keys(entries).length === 0) delete repos[repo];
      }
      return id;
    });
  }

  async get(repo: string, ref: string): Promise<Digest | undefined> {
    return (await this.read())[repo]?.[ref];
  }

  /** Every reference with the image it names, as [repo, ref, id]. */
  async all(): Promise<Array<[string, string, Digest]>> {
    const out: Array<[string, string, Digest]> = [];
    for (const [repo, refs] of Object.entries(await this.read())) for (const [ref, id] of Object.entries(refs)) out.push([repo, ref, id]);
    return out;
  }

  async referencesTo(id: Digest): Promise<string[]> {
    return (await this.all()).filter(([, , target]) => target === id).map(([, ref]) => ref);
  }
}
