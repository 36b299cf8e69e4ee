import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import type { Readable } from 'node:stream';
import { sha256, type Digest } from '../../src/util/digest.js';
import type { SaveImage } from '../../src/image/archive-writer.js';

export interface BuiltLayer {
  path: string;
  diffID: Digest;
  size: number;
}

/** A layer tar made by GNU tar from `files` (path -> content). */
export async function buildLayer(dir: string, name: string, files: Record<string, string>): Promise<BuiltLayer> {
  const root = join(dir, `${name}-root`);
  for (const [p, content] of Object.entries(files)) {
    await mkdir(join(root, p, '..'), { recursive: true });
    await writeFile(join(root, p), content);
  }
  const path = join(dir, `${name}.tar`);
  execFileSync('tar', ['-C', root, '--sort=name', '--owner=0', '--group=0', '--numeric-owner', '-cf', path, '.']);
  const data = await readFile(path);
  return { path, diffID: sha256(data), size: data.length };
}

export function configFor(layers: BuiltLayer[], extra: Record<string, unknown> = {}): Buffer {
  return Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      created: '2024-01-01T00:00:00Z',
      config: { Cmd: ['/bin/sh'], Env: ['PATH=/usr/bin:/bin'] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffID) },
      history: layers.map((_, i) => ({ created: '2024-01-01T00:00:00Z', created_by: `step ${i}` })),
      ...extra,
    }),
  );
}

export function saveImage(repoTags: string[], layers: BuiltLayer[], open?: (l: BuiltLayer) => Promise<Readable>): SaveImage {
  const raw = configFor(layers);
  return {
    repoTags,
    config: { raw, digest: sha256(raw) },
    layers: layers.map((l) => ({ diffID: l.diffID, size: l.size, open: open ? () => open(l) : async () => createReadStream(l.path) })),
  };
}

export function run(cmd: string, args: string[], cwd?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', cwd, stdio: ['ignore', 'pipe', 'pipe'] });
}

/** A tar built by python's tarfile from (name, bytes | symlink target) entries, for malformed archives. */
export function pythonTar(out: string, entries: Array<{ name: string; data?: Buffer; symlink?: string }>): void {
  const spec = entries.map((e) => ({ name: e.name, data: e.data?.toString('base64'), symlink: e.symlink }));
  const script = `
import base64, io, json, sys, tarfile
with tarfile.open(sys.argv[1], 'w', format=tarfile.PAX_FORMAT) as t:
    for e in json.load(sys.stdin):
        ti = tarfile.TarInfo(e['name'])
        if e.get('symlink') is not None:
            ti.type = tarfile.SYMTYPE; ti.linkname = e['symlink']; t.addfile(ti)
        else:
            d = base64.b64decode(e['data']); ti.size = len(d); t.addfile(ti, io.BytesIO(d))
`;
  execFileSync('python3', ['-c', script, out], { input: JSON.stringify(spec) });
}
