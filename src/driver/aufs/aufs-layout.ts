import { join } from 'node:path';
import { invalidArgument } from '../../errors.js';
import { readOptionalSync } from '../../util/read-optional.js';

/**
 * Docker's aufs layout under `<data-root>/aufs`: `diff/<id>` the layer's own files (AUFS whiteouts on
 * disk), `layers/<id>` its ancestor ids one a line, nearest first, `mnt/<id>` its mount point. strata
 * adds `state/<id>/` for what mounting through fuse-overlayfs needs (work dir, mount count, flags).
 */
export class AufsLayout {
  constructor(readonly home: string) {}

  static readonly DIRS = ['diff', 'layers', 'mnt', 'state'] as const;

  private checked(id: string): string {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(id)) throw invalidArgument(`aufs: invalid layer id '${id}'`);
    return id;
  }

  diff(id: string): string {
    return join(this.home, 'diff', this.checked(id));
  }

  layersFile(id: string): string {
    return join(this.home, 'layers', this.checked(id));
  }

  mnt(id: string): string {
    return join(this.home, 'mnt', this.checked(id));
  }

  state(id: string): string {
    return join(this.home, 'state', this.checked(id));
  }

  /** `state/<id>/<name>`: the mount count, the fuse-overlayfs work dir, flag files. */
  stateFile(id: string, name: 'mount-count' | 'work' | 'committed' | 'dirty'): string {
    return join(this.state(id), name);
  }

  /** The ancestor ids of `id`, nearest first, as `layers/<id>` lists them; null when the layer does not exist. */
  ancestors(id: string): string[] | null {
    const text = readOptionalSync(this.layersFile(id));
    return text === null ? null : text.split('\n').filter((l) => l !== '');
  }

  /** `layers/<id>` content as Docker writes it: one id a line, each ended by a newline. */
  static layersText(ids: readonly string[]): string {
    return ids.map((i) => `${i}\n`).join('');
  }
}
