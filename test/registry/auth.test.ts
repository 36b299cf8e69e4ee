import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { requireCap, isRoot } from '../helpers/caps.js';
import { startRegistry, pushLayout, type Registry } from '../fixtures/registry.js';
import { startTokenServer, type TokenServer } from '../fixtures/token-server.js';
import { busyboxImage } from '../fixtures/images.js';
import { openTestStore, storeListing, type TestStore } from '../helpers/engine.js';
import { DRIVER, isolateClientConfig } from './registry-helpers.js';

const hasTools = existsSync('/usr/bin/docker-registry') && isRoot;

describe('registry authentication', () => {
  let clientDir: string;
  let store: TestStore;

  before(async () => {
    if (!hasTools) return;
    clientDir = await isolateClientConfig();
    store = await openTestStore(DRIVER);
  });
  after(async () => {
    if (!hasTools) return;
    await store.dispose();
    await rm(clientDir, { recursive: true, force: true });
  });

  it('Basic: refuses without or with wrong credentials, logs in, pulls and pushes, logs out', async (t) => {
    if (!requireCap(t, 'docker-registry and root', hasTools)) return;
    const reg: Registry = await startRegistry({ auth: 'basic' });
    try {
      const img = await busyboxImage();
      await pushLayout(img.layout, img.ref, reg.url, 'bb:latest', { creds: reg.creds });
      const before = await storeListing(store.root);
      await assert.rejects(store.engine.pull(`${reg.url}/bb`), (e: Error & { code?: string }) => {
        assert.equal(e.code, 'ErrUnauthorized');
        assert.match(e.message, new RegExp(`^pulling ${reg.url}/bb:latest from ${reg.url}: .*unauthorized`));
        return true;
      });
      await assert.rejects(store.engine.login(reg.url, { username: reg.username!, password: 'wrong' }), { code: 'ErrUnauthorized' });
      assert.deepEqual(await storeListing(store.root), before);

      await store.engine.login(reg.url, { username: reg.username!, password: reg.password! });
      const config = JSON.parse(readFileSync(join(process.env.STRATA_CONFIG!, 'config.json'), 'utf8')) as { auths: Record<string, { auth: string }> };
      assert.equal(Buffer.from(config.auths[reg.url]!.auth, 'base64').toString(), reg.creds);
      await store.engine.pull(`${reg.url}/bb`);
      await store.engine.tag(`${reg.url}/bb`, `${reg.url}/bb2:v1`);
      await store.engine.push(`${reg.url}/bb2:v1`);

      assert.deepEqual(await store.engine.logout(reg.url), { host: reg.url, removed: true });
      assert.equal((await store.engine.logout(reg.url)).removed, false);
      await assert.rejects(store.engine.pull(`${reg.url}/bb2:v1`), { code: 'ErrUnauthorized' });

      // Docker's own config is read too (never written).
      const dockerConfig = join(process.env.DOCKER_CONFIG!, 'config.json');
      await mkdir(process.env.DOCKER_CONFIG!, { recursive: true });
      await writeFile(dockerConfig, JSON.stringify({ auths: { [`https://${reg.url}`]: { auth: Buffer.from(reg.creds!).toString('base64') } } }));
      await store.engine.pull(`${reg.url}/bb2:v1`);
      await rm(dockerConfig);
    } finally {
      await reg.stop();
    }
  });

  it('Bearer: gets scoped tokens from the token service, pulls and pushes', async (t) => {
    if (!requireCap(t, 'docker-registry, openssl and root', hasTools && existsSync('/usr/bin/openssl'))) return;
    const tokens: TokenServer = await startTokenServer();
    const reg = await startRegistry({ token: tokens.auth });
    try {
      const img = await busyboxImage();
      await pushLayout(img.layout, img.ref, reg.url, 'team/bb:latest', { creds: `${tokens.username}:${tokens.password}` });
      await assert.rejects(store.engine.pull(`${reg.url}/team/bb`), { code: 'ErrUnauthorized' });
      await assert.rejects(store.engine.login(reg.url, { username: tokens.username, password: 'nope' }), /incorrect username or password/);
      await store.engine.login(reg.url, { username: tokens.username, password: tokens.password });
      const [r] = await store.engine.pull(`${reg.url}/team/bb`);
      assert.ok(r!.digest.startsWith('sha256:'));
      assert.ok(tokens.requests.some((q) => q.ok && q.account === tokens.username && q.scopes.includes('repository:team/bb:pull')));
      await store.engine.tag(`${reg.url}/team/bb`, `${reg.url}/team/copy:v1`);
      const pushed = await store.engine.push(`${reg.url}/team/copy:v1`);
      assert.ok(tokens.requests.some((q) => q.scopes.includes('repository:team/copy:pull,push')));
      // The mount from team/bb needed pull access there too, asked for in the same token.
      assert.ok(tokens.requests.some((q) => q.scopes.includes('repository:team/copy:pull,push') && q.scopes.includes('repository:team/bb:pull')));
      const fresh = await openTestStore(DRIVER);
      try {
        const [back] = await fresh.engine.pull(`${reg.url}/team/copy:v1`);
        assert.equal(back!.digest, pushed.digest);
      } finally {
        await fresh.dispose();
      }
      await store.engine.logout(reg.url);
    } finally {
      await reg.stop();
      await tokens.stop();
    }
  });
});
