import { mkdir, readFile, readdir, rename, rm } from 'node:fs/promises';
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

/** Containers under `<data-root>/containers/<id>/`, names unique across processes (checked under a lock). */
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
      return JSON.parse(await readFile(this.configPath(id), 'utf8')) as ContainerRecord;
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

  /** Find by full id, unique id prefix or name (with or without `/`), as docker does. */
  async resolve(idOrName: string): Promise<ContainerRecord> {
    if (idOrName === '') throw invalidArgument('container name or id must not be empty');
    const all = await this.list();
    const exact = all.find((c) => c.ID === idOrName || c.Name === `/${idOrName.replace(/^\//, '')}`);
    if (exact) return exact;
    const byPrefix = /^[a-f0-9]+$/.test(idOrName) ? all.filter((c) => c.ID.startsWith(idOrName)) : [];
    if (byPrefix.length === 1) return byPrefix[0]!;
    if (byPrefix.length > 1) throw invalidArgument(`multiple containers match the prefix ${idOrName}`);
    throw notFound(`No such container: ${idOrName}`);
  }

  async checkNameFree(name: string): Promise<void> {
    const holder = (await this.list()).find((c) => c.Name === name);
    if (holder) {
      throw conflict(`Conflict. The container name "${name}" is already in use by container "${holder.ID}". You have to remove (or rename) that container to be able to reuse that name.`);
    }
  }

  /** Save a new container; the caller holds `lock` so the name check and the write are one step. */
  async add(rec: ContainerRecord): Promise<void> {
    await this.checkNameFree(rec.Name);
    await this.save(rec);
  }

  async save(rec: ContainerRecord): Promise<void> {
    await writeFileAtomic(this.configPath(rec.ID), JSON.stringify(rec), 0o600);
  }

  async remove(id: string): Promise<void> {
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
