import type { Readable } from 'node:stream';
import { readTar } from '../../../src/archive/tar/tar-reader.js';
import { WHITEOUT_PREFIX } from '../../../src/archive/whiteout.js';

/**
 * A layer tar as comparable lines, times left out: path, type, mode, owner, content or link target,
 * xattrs; a whiteout or opaque marker is its name alone (its own mode and owner mean nothing).
 */
export async function layerEntries(tar: Readable): Promise<string[]> {
  const out: string[] = [];
  for await (const e of readTar(tar)) {
    const h = e.header;
    const base = h.name.replace(/\/$/, '').split('/').pop()!;
    if (base.startsWith(WHITEOUT_PREFIX)) {
      out.push(`${h.name} whiteout`);
      continue;
    }
    let line = `${h.name} ${h.type} ${h.mode.toString(8)} ${h.uid}:${h.gid}`;
    if (h.type === 'file') {
      const chunks: Buffer[] = [];
      for await (const c of e.body()) chunks.push(Buffer.from(c));
      line += ` ${JSON.stringify(Buffer.concat(chunks).toString())}`;
    }
    if (h.type === 'symlink' || h.type === 'hardlink') line += ` -> ${h.linkname}`;
    for (const [k, v] of h.xattrs) line += ` ${k}=${v.toString('hex')}`;
    out.push(line);
  }
  return out;
}
