import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { openUnion } from '../union/open-union.js';
import type { UnionFs } from '../union/union-fs.js';

/**
 * openFs for drivers whose every layer is a full tree in a plain directory (vfs, btrfs): the layer's
 * view is that directory alone, a one-branch union. Their read-only and read-write layers look alike
 * on disk, so read-write ones are marked by an empty file `<home>/rw/<id>`; an unmarked layer (an image
 * layer, or a container made before the marks existed) opens read-only, never writable by mistake.
 */
export class LayerDirFs {
  private readonly marks: string;

  constructor(home: string) {
    this.marks = join(home, 'rw');
  }

  /** Synchronous: one small file per container create, not worth a threadpool round trip. */
  markReadWrite(id: string): void {
    mkdirSync(this.marks, { recursive: true, mode: 0o700 });
    writeFileSync(join(this.marks, id), '', { mode: 0o600 });
  }

  unmark(id: string): void {
    rmSync(join(this.marks, id), { force: true });
  }

  open(id: string, dir: string): Promise<UnionFs> {
    return openUnion([{ path: dir, mode: existsSync(join(this.marks, id)) ? 'rw' : 'ro' }]);
  }
}
