import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import { isRoot, requireCap } from '../helpers/caps.js';
import { startRegistry, pushLayout } from '../fixtures/registry.js';
import { busyboxImage, imageInfo } from '../fixtures/images.js';
import { runOk } from '../fixtures/run.js';

const hasRegistry = existsSync('/usr/bin/docker-registry');

test('push the busybox fixture to a private registry and read it back', async (t) => {
  if (!requireCap(t, 'docker-registry (apt-get install docker-registry) and root', hasRegistry && isRoot)) return;
  const reg = await startRegistry();
  try {
    assert.match(reg.url, /^127\.0\.0\.1:\d+$/);
    const img = await busyboxImage();
    await pushLayout(img.layout, img.ref, reg.url, 'library/busybox:latest');
    const tags = (await (await fetch(`http://${reg.url}/v2/library/busybox/tags/list`)).json()) as { tags: string[] };
    assert.deepEqual(tags.tags, ['latest']);
    const inspected = JSON.parse((await runOk('skopeo', ['inspect', '--tls-verify=false', `docker://${reg.url}/library/busybox:latest`])).stdout) as { Layers: string[] };
    assert.deepEqual(inspected.Layers, (await imageInfo(img.layout, img.ref)).manifest.layers.map((l) => l.digest));
  } finally {
    await reg.stop();
  }
  assert.equal(existsSync(dirname(reg.logFile)), false, 'temp dir removed');
  await assert.rejects(fetch(`http://${reg.url}/v2/`), 'registry stopped');
});

test('a registry with basic auth refuses anonymous pushes and accepts its credentials', async (t) => {
  if (!requireCap(t, 'docker-registry and root', hasRegistry && isRoot)) return;
  const reg = await startRegistry({ auth: 'basic' });
  try {
    assert.ok(reg.creds);
    assert.equal((await fetch(`http://${reg.url}/v2/`)).status, 401);
    const auth = `Basic ${Buffer.from(reg.creds).toString('base64')}`;
    assert.equal((await fetch(`http://${reg.url}/v2/`, { headers: { authorization: auth } })).status, 200);
    const img = await busyboxImage();
    await assert.rejects(pushLayout(img.layout, img.ref, reg.url, 'busybox:anon'), /unauthorized|authentication required/i);
    await pushLayout(img.layout, img.ref, reg.url, 'busybox:latest', { creds: reg.creds });
    const tags = (await (await fetch(`http://${reg.url}/v2/busybox/tags/list`, { headers: { authorization: auth } })).json()) as { tags: string[] };
    assert.deepEqual(tags.tags, ['latest']);
  } finally {
    await reg.stop();
  }
});
