import type { FileHandle } from 'node:fs/promises';
import type { Stats, BigIntStats } from 'node:fs';

/** What a handle needs from its union: metadata changes go through the union (copy-up, never a lower branch). */
export interface HandleOwner {
  chmod(path: string, mode: number): Promise<void>;
  chown(path: string, uid: number, gid: number): Promise<void>;
  utimes(path: string, atime: number | string | Date, mtime: number | string | Date): Promise<void>;
}

/**
 * A FileHandle of the union: data calls go to the host file (the upper copy when opened for writing,
 * the topmost lower file when opened read-only, whose kernel open mode refuses writes); metadata calls
 * go through the union by path, so a read-only handle can never change a lower branch.
 */
export class UnionFileHandle {
  constructor(
    private readonly h: FileHandle,
    private readonly owner: HandleOwner,
    /** The file's path inside the union. */
    readonly path: string,
  ) {}

  get fd(): number {
    return this.h.fd;
  }
  read: FileHandle['read'] = ((...a: unknown[]) => (this.h.read as (...x: unknown[]) => unknown)(...a)) as FileHandle['read'];
  write: FileHandle['write'] = ((...a: unknown[]) => (this.h.write as (...x: unknown[]) => unknown)(...a)) as FileHandle['write'];
  readv: FileHandle['readv'] = (b, p) => this.h.readv(b, p);
  writev: FileHandle['writev'] = (b, p) => this.h.writev(b, p);
  readFile: FileHandle['readFile'] = ((o?: unknown) => (this.h.readFile as (x?: unknown) => unknown)(o)) as FileHandle['readFile'];
  writeFile: FileHandle['writeFile'] = (d, o) => this.h.writeFile(d, o);
  appendFile: FileHandle['appendFile'] = (d, o) => this.h.appendFile(d, o);
  truncate: FileHandle['truncate'] = (len) => this.h.truncate(len);
  sync: FileHandle['sync'] = () => this.h.sync();
  datasync: FileHandle['datasync'] = () => this.h.datasync();
  createReadStream: FileHandle['createReadStream'] = (o) => this.h.createReadStream(o);
  createWriteStream: FileHandle['createWriteStream'] = (o) => this.h.createWriteStream(o);
  stat(opts?: { bigint?: false }): Promise<Stats>;
  stat(opts: { bigint: true }): Promise<BigIntStats>;
  stat(opts?: { bigint?: boolean }): Promise<Stats | BigIntStats> {
    return this.h.stat(opts as { bigint: false });
  }
  chmod(mode: number): Promise<void> {
    return this.owner.chmod(this.path, mode);
  }
  chown(uid: number, gid: number): Promise<void> {
    return this.owner.chown(this.path, uid, gid);
  }
  utimes(atime: number | string | Date, mtime: number | string | Date): Promise<void> {
    return this.owner.utimes(this.path, atime, mtime);
  }
  close(): Promise<void> {
    return this.h.close();
  }
  async [Symbol.asyncDispose](): Promise<void> {
    await this.h.close();
  }
}
