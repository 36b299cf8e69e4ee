import assert from 'node:assert/strict';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import type { Engine } from '../../src/engine.js';
import type { ProgressEvent } from '../../src/registry/progress.js';
import { compareTrees } from '../fixtures/compare-tree.js';
import { blobPath, type ImageFixture } from '../fixtures/images.js';
import { runOk } from '../fixtures/run.js';
import { isRoot } from '../helpers/caps.js';

/** Registry tests run on the default driver of the machine (overlay2 as root). */
export const DRIVER = isRoot ? 'overlay2' : 'vfs';

/** What a container's init layer adds over an image's tree. */
export const INIT_ONLY = ['/.dockerenv', '/etc/hosts', '/etc/hostname', '/etc/resolv.conf', '/etc/mtab', '/dev/console', '/dev/pts', '/dev/shm', '/proc', '/sys', '/dev'];

/** Keep the host's Docker and strata client configs out of the tests: credentials live in a temp dir. */
export async function isolateClientConfig(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'strata-client-'));
  process.env.STRATA_CONFIG = join(dir, 'strata');
  process.env.DOCKER_CONFIG = join(dir, 'docker');
  return dir;
}

/** The image's tree (through a container mount) must equal `reference` (an umoci unpack). */
export async function assertImageTree(engine: Engine, image: string, reference: string): Promise<void> {
  const c = await engine.create({ image });
  const root = await engine.mount(c.ID);
  try {
    assert.deepEqual(await compareTrees(root, reference, { ignore: INIT_ONLY }), []);
  } finally {
    await engine.unmount(c.ID);
    await engine.rm(c.ID);
  }
}

/** Collect the engine's progress events while `fn` runs. */
export async function withEvents<T>(engine: Engine, fn: () => Promise<T>): Promise<{ result: T; events: ProgressEvent[] }> {
  const events: ProgressEvent[] = [];
  const on = (e: ProgressEvent) => events.push(e);
  engine.on('progress', on);
  try {
    return { result: await fn(), events };
  } finally {
    engine.off('progress', on);
  }
}

const sha = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function writeBlob(layout: string, data: Buffer): Promise<{ digest: string; size: number }> {
  const digest = sha(data);
  await writeFile(blobPath(layout, digest), data);
  return { digest, size: data.length };
}

/**
 * A copy of `base` with a second image: the same layers under a linux/arm64 config whose Cmd says "arm64", and an
 * index `multi` naming both (amd64 and arm64). Returns the layout; push it with `skopeo copy --all`.
 */
export async function multiPlatformLayout(base: ImageFixture, work: string): Promise<string> {
  const layout = join(work, 'multi-layout');
  await runOk('cp', ['-a', base.layout, layout]);
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: Array<{ mediaType: string; digest: string; size: number; annotations?: Record<string, string> }> };
  const amd = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === base.ref)!;
  const manifest = JSON.parse(await readFile(blobPath(layout, amd.digest), 'utf8')) as { config: { digest: string; size: number; mediaType: string } };
  const config = JSON.parse(await readFile(blobPath(layout, manifest.config.digest), 'utf8')) as Record<string, unknown> & { config: Record<string, unknown> };
  const armConfig = await writeBlob(layout, Buffer.from(JSON.stringify({ ...config, architecture: 'arm64', variant: 'v8', config: { ...config.config, Cmd: ['arm64'] } })));
  const armManifest = await writeBlob(layout, Buffer.from(JSON.stringify({ ...manifest, config: { ...manifest.config, ...armConfig } })));
  const idx = await writeBlob(
    layout,
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [
          { mediaType: amd.mediaType, digest: amd.digest, size: amd.size, platform: { os: 'linux', architecture: 'amd64' } },
          { mediaType: amd.mediaType, ...armManifest, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
        ],
      }),
    ),
  );
  index.manifests.push({ mediaType: 'application/vnd.oci.image.index.v1+json', ...idx, annotations: { 'org.opencontainers.image.ref.name': 'multi' } });
  await writeFile(join(layout, 'index.json'), JSON.stringify(index));
  return layout;
}
