import { existsSync, lstatSync, readFileSync, mkdirSync, readlinkSync, symlinkSync } from 'node:fs';
import { mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic.js';
import { withFileLock } from '../util/lock.js';
import type { Digest } from '../util/digest.js';
import { conflict, invalidArgument, isErrno, notFound } from '../errors.js';
import type { ContainerConfig } from '../image/manifest.js';
import type { MountPoint } from './mount-spec.js';
import type { ContainerHostConfig } from './container-mounts.js';

/** A container as `config.v2.json` records it (the subset of Docker's fields strata fills). */
export interface ContainerRecord {
  ID: string;
  Created: string;
  /** With docker's leading `/`. */
  Name: string;
  /** Image id. */
  Image: Digest;
  Driver: string;
  Config: ContainerConfig & { Image: string; Hostname: string };
  State: { Status: 'created' | 'running' | 'exited'; Running: boolean; ExitCode: number; StartedAt: string; FinishedAt: string; Pid: number };
  /** Volumes, binds and tmpfs by destination (Docker's MountPoints); absent on records made before volumes. */
  MountPoints?: Record<string, MountPoint>;
  HostConfig?: ContainerHostConfig;
}

/** Containers under `<data-root>/containers/<id>/`; names kept unique across processes by an index of symlinks. */
export class ContainerStore {
  private readonly dir: string;

  constructor(root: string) {
    this.dir = join(root, 'containers');
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
  }

  private configPath(id: string): string {
    return join(this.dir, id, 'config.v2.json');
  }

  lock<T>(fn: () => Promise<T>): Promise<T> {
    return withFileLock(join(this.dir, '.lock'), fn);
  }

  async ids(): Promise<string[]> {
    return (await readdir(this.dir)).filter((n) => /^[a-f0-9]{64}$/.test(n));
  }

  async get(id: string): Promise<ContainerRecord> {
    try {
      return JSON.parse(readFileSync(this.configPath(id), 'utf8')) as ContainerRecord;
    } catch (e) {
      if (isErrno(e, 'ENOENT')) throw notFound(`No such container: ${id}`);
      throw e;
    }
  }

  async list(): Promise<ContainerRecord[]> {
    const out: ContainerRecord[] = [];
    for (const id of await this.ids()) {
      // A container removed by another process between readdir and read is simply gone.
      const rec = await this.get(id).catch((e) => (e.code === 'ErrNotFound' ? null : Promise.reject(e)));
      if (rec) out.push(rec);
    }
    return out;
  }

  private namePath(name: string): string {
    return join(this.dir, '.names', name.replace(/^\//, ''));
  }

  /** The id holding a name (with or without `/`), from the name index: `.names/<name>` -> id. */
  private async nameHolder(name: string): Promise<string | undefined> {
    try {
      return readlinkSync(this.namePath(name));
    } catch (e) {
      if (isErrno(e, 'ENOENT') || isErrno(e, 'EINVAL')) return undefined;
      throw e;
    }
  }

  /** Whether a name (without `/`) is in use: one lookup in the name index, however many containers there are. */
  nameTaken(name: string): boolean {
    return lstatSync(this.namePath(name), { throwIfNoEntry: false }) !== undefined;
  }

  /** Find by full id, name (with or without `/`) or unique id prefix, as docker does. */
  async resolve(idOrName: string): Promise<ContainerRecord> {
    if (idOrName === '') throw invalidArgument('container name or id must not be empty');
    if (/^[a-f0-9]{64}$/.test(idOrName) && existsSync(join(this.dir, idOrName))) return this.get(idOrName);
    if (!idOrName.slice(1).includes('/')) {
      const holder = await this.nameHolder(idOrName);
      if (holder !== undefined) return this.get(holder);
    }
    const byPrefix = /^[a-f0-9]+$/.test(idOrName) ? (await this.ids()).filter((id) => id.startsWith(idOrName)) : [];
    if (byPrefix.length === 1) return this.get(byPrefix[0]!);
    if (byPrefix.length > 1) throw invalidArgument(`multiple containers match the prefix ${idOrName}`);
    throw notFound(`No such container: ${idOrName}`);
  }

  async checkNameFree(name: string): Promise<void> {
    const holder = await this.nameHolder(name);
    if (holder !== undefined) {
      throw conflict(`Conflict. The container name "${name}" is already in use by container "${holder}". You have to remove (or rename) that container to be able to reuse that name.`);
    }
  }

  /** Save a new container, taking its name first: the symlink's creation is atomic across processes. */
  async add(rec: ContainerRecord): Promise<void> {
    mkdirSync(join(this.dir, '.names'), { recursive: true });
    try {
      symlinkSync(rec.ID, this.namePath(rec.Name));
    } catch (e) {
      if (isErrno(e, 'EEXIST')) await this.checkNameFree(rec.Name);
      throw e;
    }
    try {
      await this.save(rec);
    } catch (e) {
      await rm(this.namePath(rec.Name), { force: true });
      throw e;
    }
  }

  async save(rec: ContainerRecord): Promise<void> {
    // As Docker: the file is synced before the rename, the directory is not. A crash may lose the last save
    // (a container just created is then not there, as `list` already tolerates), never tear it.
    await writeFileAtomic(this.configPath(rec.ID), JSON.stringify(rec), 0o600, { syncDir: false });
  }

  async remove(id: string): Promise<void> {
    const rec = await this.get(id).catch(() => undefined);
    if (rec !== undefined && (await this.nameHolder(rec.Name)) === id) await rm(this.namePath(rec.Name), { force: true });
    const removing = join(this.dir, `${id}-removing`);
    await rename(join(this.dir, id), removing).catch((e) => {
      if (!isErrno(e, 'ENOENT')) throw e;
    });
    await rm(removing, { recursive: true, force: true });
  }

  async usingImage(imageId: Digest): Promise<ContainerRecord[]> {
    return (await this.list()).filter((c) => c.Image === imageId);
  }
}
