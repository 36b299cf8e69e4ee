import { existsSync } from 'node:fs';
import { mkdir, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import type { ApplyHooks, Change, CreateOpts, Driver, DriverFactory, DriverOptions } from '../driver.js';
import { invalidArgument, isErrno, notFound } from '../../errors.js';
import { copyTree } from '../../util/copy-tree.js';
import { ensureRemoveAll } from '../ensure-remove.js';
import { naiveApplyDiff, naiveChanges, naiveDiff, naiveDiffSize } from '../naive-diff.js';

function checkID(id: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id)) throw invalidArgument(`vfs: invalid layer id '${id}'`);
}

/** Docker's vfs graphdriver: every layer a full copy of its parent in `<home>/dir/<id>`; no mounts, works anywhere. */
export class VfsDriver implements Driver {
  readonly name = 'vfs';

  private constructor(readonly home: string) {}

  static async init(opts: DriverOptions): Promise<VfsDriver> {
    for (const key of Object.keys(opts.options)) {
      if (/^(vfs\.)?size$/i.test(key)) throw invalidArgument(`vfs: ${key} is not supported: size limits need overlay2 on xfs mounted with prjquota`);
      throw invalidArgument(`vfs: unknown option ${key}`);
    }
    await mkdir(opts.root, { recursive: true });
    const home = join(await realpath(opts.root), 'vfs');
    await mkdir(join(home, 'dir'), { recursive: true, mode: 0o700 });
    return new VfsDriver(home);
  }

  private dir(id: string): string {
    checkID(id);
    return join(this.home, 'dir', id);
  }

  private mustExist(id: string): string {
    const dir = this.dir(id);
    if (!existsSync(dir)) throw notFound(`vfs: layer ${id} does not exist`);
    return dir;
  }

  async create(id: string, parent: string | null, opts?: CreateOpts): Promise<void> {
    if (Object.keys(opts?.storageOpt ?? {}).length > 0) throw invalidArgument('--storage-opt is not supported for vfs');
    const parentDir = parent === null ? null : this.mustExist(parent);
    const dir = this.dir(id);
    try {
      await mkdir(dir, { mode: 0o755 });
    } catch (e) {
      if (isErrno(e, 'EEXIST')) throw invalidArgument(`vfs: layer ${id} already exists`);
      throw e;
    }
    if (parentDir === null) return;
    try {
      await copyTree(parentDir, dir);
    } catch (e) {
      await ensureRemoveAll(dir);
      throw e;
    }
  }

  createReadWrite(id: string, parent: string | null, opts?: CreateOpts): Promise<void> {
    return this.create(id, parent, opts);
  }

  remove(id: string): Promise<void> {
    return ensureRemoveAll(this.dir(id));
  }

  // Nothing is mounted, so there is nothing to count: get is a lookup and put has nothing to release.
  async get(id: string): Promise<string> {
    return this.mustExist(id);
  }

  async put(id: string): Promise<void> {
    this.mustExist(id);
  }

  async exists(id: string): Promise<boolean> {
    return existsSync(this.dir(id));
  }

  async status(): Promise<Array<[string, string]>> {
    return [];
  }

  async metadata(id: string): Promise<Record<string, string>> {
    this.mustExist(id);
    return {};
  }

  diff(id: string, parent: string | null): Promise<Readable> {
    return naiveDiff(this, id, parent);
  }

  changes(id: string, parent: string | null): Promise<Change[]> {
    return naiveChanges(this, id, parent);
  }

  applyDiff(id: string, _parent: string | null, tar: Readable, hooks?: ApplyHooks): Promise<number> {
    return naiveApplyDiff(this, id, tar, hooks);
  }

  diffSize(id: string, parent: string | null): Promise<number> {
    return naiveDiffSize(this, id, parent);
  }

  async cleanup(): Promise<void> {}
}

export const vfs: DriverFactory = { name: 'vfs', init: (opts) => VfsDriver.init(opts) };
