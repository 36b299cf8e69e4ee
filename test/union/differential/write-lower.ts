import { chmodSync, lchownSync, linkSync, mkdirSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { constants as C } from 'node:fs';
import { dirname, join } from 'node:path';
import { native } from '../../../src/native/native.js';
import type { LowerEntry } from './sequence.js';

/**
 * Write a generated lower branch in one on-disk form: `overlay` (whiteouts as char 0/0 devices, opaque
 * directories by xattr: what the kernel reads) or `aufs` (`.wh.<name>` and `.wh..wh..opq` files: what
 * the userspace union reads). Parent directories not listed are made 0755, as mkdir -p does.
 */
export function writeLower(dir: string, entries: readonly LowerEntry[], form: 'overlay' | 'aufs'): void {
  mkdirSync(dir);
  for (const e of entries) {
    const host = join(dir, e.p);
    mkdirSync(dirname(host), { recursive: true });
    switch (e.kind) {
      case 'file':
        writeFileSync(host, e.data, { flag: 'wx' });
        lchownSync(host, e.uid, e.gid);
        chmodSync(host, e.mode);
        utimesSync(host, e.mtime, e.mtime);
        break;
      case 'dir':
        mkdirSync(host);
        chmodSync(host, e.mode);
        break;
      case 'symlink':
        symlinkSync(e.target, host);
        break;
      case 'hardlink':
        linkSync(join(dir, e.to), host);
        break;
      case 'whiteout':
        if (form === 'overlay') native.mknod(host, C.S_IFCHR, 0, 0);
        else writeFileSync(join(dirname(host), `.wh.${e.p.split('/').pop()}`), '');
        break;
      case 'opaque':
        mkdirSync(host, { recursive: true });
        if (form === 'overlay') native.lsetxattr(host, 'trusted.overlay.opaque', Buffer.from('y'));
        else writeFileSync(join(host, '.wh..wh..opq'), '');
    }
  }
}
