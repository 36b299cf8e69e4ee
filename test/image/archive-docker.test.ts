import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { isRoot, requireCap } from '../helpers/caps.js';
import { startDockerd, loadIntoDocker } from '../fixtures/dockerd.js';
import { writeImageArchive } from '../../src/image/archive-writer.js';
import { readImageArchive } from '../../src/image/archive-reader.js';
import { LocalContentStore } from '../../src/content/local-content-store.js';
import { buildLayer, saveImage } from './archive-fixtures.js';

test('real dockerd loads our docker-format archive, and we read what its docker save writes', async (t) => {
  if (!requireCap(t, 'root and /usr/sbin/dockerd', isRoot && existsSync('/usr/sbin/dockerd'))) return;
  const tmp = await mkdtemp(join(tmpdir(), 'strata-archive-docker-'));
  const d = await startDockerd();
  try {
    const base = await buildLayer(tmp, 'base', { 'etc/motd': 'hello\n' });
    const top = await buildLayer(tmp, 'top', { 'srv/file': 'x'.repeat(100_000) });
    const ours = join(tmp, 'ours.tar');
    await pipeline(writeImageArchive([saveImage(['strata/a:1'], [base]), saveImage(['strata/b:2'], [base, top])], 'docker'), createWriteStream(ours));
    assert.deepEqual((await loadIntoDocker(d, ours)).sort(), ['strata/a:1', 'strata/b:2']);
    const inspect = await d.docker(['image', 'inspect', 'strata/b:2']);
    assert.equal(inspect.code, 0, inspect.stderr);
    const [info] = JSON.parse(inspect.stdout) as Array<{ RootFS: { Layers: string[] } }>;
    assert.deepEqual(info!.RootFS.Layers, [base.diffID, top.diffID]);

    const saved = join(tmp, 'saved.tar');
    const save = await d.docker(['save', '-o', saved, 'strata/a:1', 'strata/b:2']);
    assert.equal(save.code, 0, save.stderr);
    const store = new LocalContentStore(join(tmp, 'store'));
    const got = await readImageArchive(createReadStream(saved), store);
    const byTag = new Map(got.images.flatMap((i) => i.repoTags.map((tag) => [tag, i] as const)));
    assert.deepEqual([...byTag.keys()].sort(), ['strata/a:1', 'strata/b:2']);
    assert.deepEqual(byTag.get('strata/b:2')!.layers.map((l) => l.digest), [base.diffID, top.diffID]);
    assert.deepEqual(byTag.get('strata/b:2')!.config.parsed.rootfs.diff_ids, [base.diffID, top.diffID]);
    assert.equal(byTag.get('strata/a:1')!.layers[0]!.mediaType, 'application/vnd.docker.image.rootfs.diff.tar');
  } finally {
    await d.stop();
    await rm(tmp, { recursive: true, force: true });
  }
});
