import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from '../util/atomic.js';
import { invalidArgument, isErrno, notFound } from '../errors.js';
import { parseVolumeOptions, type VolumeOptions } from './local-volume.js';

/** Docker's label on volumes made for `-v /path`, image VOLUMEs and `--mount type=volume` without a source. */
export const ANONYMOUS_LABEL = 'com.docker.volume.anonymous';

/** Docker's names.RestrictedNameChars, at least two characters. */
const NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

/** A `local` volume as `volume inspect` shows it. */
export interface Volume {
  CreatedAt: string;
  Driver: 'local';
  Labels: Record<string, string>;
  Mountpoint: string;
  Name: string;
  Options: Record<string, string>;
  Scope: 'local';
}

export function validateVolumeName(name: string): string {
  if (!NAME.test(name)) {
    throw invalidArgument(`create ${name}: "${name}" includes invalid characters for a local volume name, only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed. If you intended to pass a host directory, use absolute path`);
  }
  return name;
}

export const isAnonymous = (v: Volume): boolean => ANONYMOUS_LABEL in v.Labels;

/**
 * Volumes of the `local` driver under `<data-root>/volumes/<name>/`: `_data` holds the data, `opts.json` the
 * driver options (Docker's file), `labels.json` the labels. A volume appears by one rename of a complete
 * directory, so a reader never sees half of one.
 */
export class VolumeStore {
  readonly dir: string;

  constructor(root: string) {
    this.dir = join(root, 'volumes');
  }

  private path(name: string): string {
    return join(this.dir, name);
  }

  dataPath(name: string): string {
    return join(this.dir, name, '_data');
  }

  /** The existing volume of that name, or a new one; without a name, a new anonymous volume. */
  async create(name: string | undefined, opts: { labels?: Record<string, string>; driverOpts?: Record<string, string> } = {}): Promise<{ volume: Volume; created: boolean }> {
    const options = parseVolumeOptions(opts.driverOpts ?? {});
    const labels = { ...(opts.labels ?? {}) };
    if (name === undefined) {
      name = randomBytes(32).toString('hex');
      labels[ANONYMOUS_LABEL] = '';
    } else {
      validateVolumeName(name);
      const existing = await this.find(name);
      if (existing) return { volume: existing, created: false };
    }
    await mkdir(this.dir, { recursive: true, mode: 0o701 });
    const tmp = join(this.dir, `.tmp-${randomBytes(8).toString('hex')}`);
    try {
      await mkdir(join(tmp, '_data'), { recursive: true, mode: 0o755 });
      await writeFileAtomic(join(tmp, 'opts.json'), JSON.stringify(options.raw), 0o600);
      await writeFileAtomic(join(tmp, 'labels.json'), JSON.stringify(labels), 0o600);
      await rename(tmp, this.path(name));
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      // Another process made it first: theirs is the volume.
      if (isErrno(e, 'ENOTEMPTY') || isErrno(e, 'EEXIST')) return { volume: await this.get(name), created: false };
      throw e;
    }
    return { volume: await this.get(name), created: true };
  }

  async find(name: string): Promise<Volume | null> {
    if (!NAME.test(name)) return null;
    let labels: Record<string, string>;
    let options: VolumeOptions;
    let created: Date;
    try {
      labels = JSON.parse(await readFile(join(this.path(name), 'labels.json'), 'utf8')) as Record<string, string>;
      options = parseVolumeOptions(JSON.parse(await readFile(join(this.path(name), 'opts.json'), 'utf8')) as Record<string, string>, true);
      created = (await stat(this.dataPath(name))).mtime;
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return null;
      throw e;
    }
    return {
      CreatedAt: created.toISOString().replace(/\.\d+Z$/, 'Z'),
      Driver: 'local',
      Labels: labels,
      Mountpoint: this.dataPath(name),
      Name: name,
      Options: options.cli,
      Scope: 'local',
    };
  }

  async get(name: string): Promise<Volume> {
    const v = await this.find(name);
    if (!v) throw notFound(`get ${name}: no such volume`);
    return v;
  }

  async list(): Promise<Volume[]> {
    let names: string[];
    try {
      names = (await readdir(this.dir)).filter((n) => NAME.test(n));
    } catch (e) {
      if (isErrno(e, 'ENOENT')) return [];
      throw e;
    }
    const out: Volume[] = [];
    for (const n of names.sort()) {
      const v = await this.find(n);
      if (v) out.push(v);
    }
    return out;
  }

  /** Remove the volume's directory (the caller checked it is unused, under the containers' lock). */
  async remove(name: string): Promise<void> {
    const removing = join(this.dir, `.removing-${name}`);
    await rename(this.path(name), removing);
    await rm(removing, { recursive: true, force: true });
  }
}
