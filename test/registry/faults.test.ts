import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { requireCap, isRoot } from '../helpers/caps.js';
import { startRegistry, pushLayout, type Registry } from '../fixtures/registry.js';
import { startBlobOrigin, startFaultProxy, type FaultProxy, type FaultHandler } from '../fixtures/fault-proxy.js';
import { busyboxImage, imageInfo, umociUnpack, type ImageInfo } from '../fixtures/images.js';
import { run } from '../fixtures/run.js';
import { openTestStore, storeListing, type TestStore } from '../helpers/engine.js';
import { assertImageTree, DRIVER, isolateClientConfig } from './registry-helpers.js';

const hasTools = existsSync('/usr/bin/docker-registry') && isRoot;
const BIN = resolve(import.meta.dirname, '../../bin/strata');
const isManifest = (path: string) => path.includes('/manifests/');

describe('pull through a faulty network', () => {
  let clientDir: string;
  let work: string;
  let reg: Registry;
  let proxy: FaultProxy;
  let info: ImageInfo;
  let layer: string;
  let tree: string;
  let creds: { username: string; password: string };

  before(async () => {
    if (!hasTools) return;
    clientDir = await isolateClientConfig();
    work = await mkdtemp(join(tmpdir(), 'strata-faults-'));
    reg = await startRegistry({ auth: 'basic' });
    creds = { username: reg.username!, password: reg.password! };
    const img = await busyboxImage();
    await pushLayout(img.layout, img.ref, reg.url, 'bb:latest', { creds: reg.creds });
    info = await imageInfo(img.layout, img.ref);
    layer = info.manifest.layers[0]!.digest;
    tree = await umociUnpack(img.layout, img.ref, join(work, 'bundle'));
    proxy = await startFaultProxy(reg.url);
  });
  after(async () => {
    if (!hasTools) return;
    await proxy.stop();
    await reg.stop();
    await rm(work, { recursive: true, force: true });
    await rm(clientDir, { recursive: true, force: true });
  });

  /** Pull bb:latest through the proxy with `handler` in place, on a fresh store. */
  async function pullWith(handler: FaultHandler | undefined, check: (s: TestStore, pull: () => Promise<unknown>) => Promise<void>, ref = `${proxy.url}/bb:latest`): Promise<void> {
    const s = await openTestStore(DRIVER);
    proxy.requests.length = 0;
    proxy.setHandler(handler);
    try {
      await check(s, () => s.engine.pull(ref, { credentials: creds }));
    } finally {
      proxy.setHandler(undefined);
      await s.dispose();
    }
  }

  /** The pull fails with `code` and a one-line message naming the reference, the registry and `reason`; the store is unchanged. */
  async function failsCleanly(s: TestStore, pull: () => Promise<unknown>, code: string, reason: RegExp, ref = `${proxy.url}/bb:latest`): Promise<void> {
    const before = await storeListing(s.root);
    await assert.rejects(pull(), (e: Error & { code?: string }) => {
      assert.equal(e.code, code, e.message);
      assert.ok(e.message.startsWith(`pulling ${ref} from ${proxy.url}: `), e.message);
      assert.match(e.message, reason);
      assert.ok(!e.message.includes('\n'));
      return true;
    });
    assert.deepEqual(await storeListing(s.root), before);
  }

  it('resumes a blob with Range after the connection drops in the middle', async (t) => {
    if (!requireCap(t, 'docker-registry and root', hasTools)) return;
    let drops = 2;
    await pullWith(
      (req, _res, forward) => forward(req.url!.endsWith(`/blobs/${layer}`) && drops-- > 0 ? { dropAfter: 300_000 } : {}),
      async (s, pull) => {
        await pull();
        const gets = proxy.requests.filter((r) => r.path.endsWith(`/blobs/${layer}`));
        assert.equal(gets.length, 3);
        assert.equal(gets[0]!.range, undefined);
        assert.ok(Number(/^bytes=(\d+)-$/.exec(gets[1]!.range ?? '')?.[1]) > 0, `resumed with ${gets[1]!.range}`);
        assert.ok(Number(/^bytes=(\d+)-$/.exec(gets[2]!.range ?? '')?.[1]) > 300_000, `resumed with ${gets[2]!.range}`);
        await assertImageTree(s.engine, `${proxy.url}/bb:latest`, tree);
      },
    );
  });

  it('refuses a blob whose bytes do not match its digest', async (t) => {
    if (!requireCap(t, 'docker-registry and root', hasTools)) return;
    await pullWith((req, _res, forward) => forward(req.url!.endsWith(`/blobs/${layer}`) ? { corruptAt: 1000 } : {}), (s, pull) => failsCleanly(s, pull, 'ErrDigestMismatch', new RegExp(`layer ${layer}: expected digest`)));
  });

  it('retries 500s and honours 429 Retry-After, then succeeds', async (t) => {
    if (!requireCap(t, 'docker-registry and root', hasTools)) return;
    let fails = 2;
    await pullWith(
      (req, res, forward) => {
        if (isManifest(req.url!) && fails-- > 0) {
          res.writeHead(500).end('{"errors":[{"code":"UNKNOWN","message":"boom"}]}');
          return;
        }
        forward();
      },
      async (_s, pull) => {
        await pull();
        assert.equal(proxy.requests.filter((r) => isManifest(r.path)).length, 3);
      },
    );
    let limited = 1;
    const started = Date.now();
    await pullWith(
      (req, res, forward) => {
        if (req.url!.endsWith(`/blobs/${layer}`) && limited-- > 0) {
          res.writeHead(429, { 'retry-after': '1' }).end();
          return;
        }
        forward();
      },
      async (_s, pull) => {
        await pull();
        assert.ok(Date.now() - started >= 1000, 'waited for Retry-After');
      },
    );
    // A registry that keeps failing: a clear error after the retries.
    await pullWith(
      (req, res, forward) => (isManifest(req.url!) ? res.writeHead(503).end() : forward()),
      (s, pull) => failsCleanly(s, pull, 'ErrUnavailable', /manifest latest: HTTP 503/),
    );
  });

  it('follows a blob redirect to another origin without sending it the Authorization header', async (t) => {
    if (!requireCap(t, 'docker-registry and root', hasTools)) return;
    const origin = await startBlobOrigin(reg.url, reg.creds);
    try {
      await pullWith(
        (req, res, forward) => {
          if (req.url!.includes('/blobs/sha256:')) {
            res.writeHead(307, { location: `http://${origin.url}${req.url}` }).end();
            return;
          }
          forward();
        },
        async (s, pull) => {
          await pull();
          assert.ok(proxy.requests.some((r) => r.authorization?.startsWith('Basic ')), 'the registry got credentials');
          assert.ok(origin.requests.length >= 2, 'config and layer came from the other origin');
          for (const r of origin.requests) assert.equal(r.authorization, undefined);
          await assertImageTree(s.engine, `${proxy.url}/bb:latest`, tree);
        },
      );
    } finally {
      await origin.stop();
    }
  });

  it('refuses a manifest whose mediaType disagrees with its content, a schema 1 manifest, and one over 4 MiB', async (t) => {
    if (!requireCap(t, 'docker-registry and root', hasTools)) return;
    await pullWith(
      (req, _res, forward) => forward(isManifest(req.url!) ? { headers: (h) => ({ ...h, 'content-type': 'application/vnd.oci.image.index.v1+json' }) } : {}),
      (s, pull) => failsCleanly(s, pull, 'ErrCorrupt', /declared as application\/vnd\.oci\.image\.index\.v1\+json but its content is/),
    );
    await pullWith(
      (req, res, forward) => {
        if (!isManifest(req.url!)) return forward();
        res.writeHead(200, { 'content-type': 'application/vnd.docker.distribution.manifest.v1+prettyjws' }).end(JSON.stringify({ schemaVersion: 1, name: 'bb', tag: 'latest', fsLayers: [] }));
      },
      (s, pull) => failsCleanly(s, pull, 'ErrUnsupported', /schema 1 is not supported/),
    );
    for (const declared of [true, false]) {
      await pullWith(
        (req, res, forward) => {
          if (!isManifest(req.url!)) return forward();
          const size = 5 << 20;
          res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', ...(declared ? { 'content-length': String(size) } : {}) });
          const chunk = Buffer.alloc(1 << 20, 0x20);
          let n = 0;
          const write = () => {
            while (n < size && res.write(chunk)) n += chunk.length;
            if (n < size) res.once('drain', () => ((n += chunk.length), write()));
            else res.end();
          };
          res.on('error', () => undefined);
          write();
        },
        (s, pull) => failsCleanly(s, pull, 'ErrLimit', /manifest latest is .*more than the 4194304/),
      );
    }
  });

  it('names bad input: unknown tag and repository, a digest the registry lacks, 403, unsupported layer type, unknown host', async (t) => {
    if (!requireCap(t, 'docker-registry and root', hasTools)) return;
    await pullWith(undefined, (s, pull) => failsCleanly(s, pull, 'ErrNotFound', /manifest nope: manifest unknown/, `${proxy.url}/bb:nope`), `${proxy.url}/bb:nope`);
    await pullWith(undefined, (s, pull) => failsCleanly(s, pull, 'ErrNotFound', /name unknown|manifest unknown/, `${proxy.url}/nothere:latest`), `${proxy.url}/nothere`);
    const missing = `sha256:${'0'.repeat(64)}`;
    await pullWith(undefined, (s, pull) => failsCleanly(s, pull, 'ErrNotFound', /manifest unknown/, `${proxy.url}/bb@${missing}`), `${proxy.url}/bb@${missing}`);
    await pullWith(
      (req, res, forward) => (isManifest(req.url!) ? res.writeHead(403, { 'content-type': 'application/json' }).end('{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}') : forward()),
      (s, pull) => failsCleanly(s, pull, 'ErrForbidden', /denied: requested access to the resource is denied/),
    );
    await pullWith(
      (req, res, forward) => {
        if (!isManifest(req.url!)) return forward();
        const m = { ...info.manifest, schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', layers: info.manifest.layers.map((l) => ({ ...l, mediaType: 'application/vnd.example.layer.v1.tar+lz4' })) };
        res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }).end(JSON.stringify(m));
      },
      (s, pull) => failsCleanly(s, pull, 'ErrUnsupported', /unsupported layer media type "application\/vnd\.example\.layer\.v1\.tar\+lz4"/),
    );
    const s = await openTestStore(DRIVER);
    try {
      await assert.rejects(s.engine.pull('registry.invalid/bb'), { message: 'pulling registry.invalid/bb:latest from registry.invalid: no such host registry.invalid' });
    } finally {
      await s.dispose();
    }
  });

  it('two strata pull processes of one image fetch each layer once, and both succeed', async (t) => {
    if (!requireCap(t, 'docker-registry and root', hasTools)) return;
    const s = await openTestStore(DRIVER);
    proxy.requests.length = 0;
    // Slow blobs down so both processes are in the middle of their downloads at once.
    proxy.setHandler((req, _res, forward) => (req.url!.includes('/blobs/') ? setTimeout(forward, 500) : forward()));
    try {
      await s.engine.login(proxy.url, creds);
      const strata = () => run(BIN, ['--data-root', s.root, '-s', DRIVER, 'pull', `${proxy.url}/bb:latest`], { env: process.env, timeoutMs: 120_000 });
      const [a, b] = await Promise.all([strata(), strata()]);
      assert.equal(a.code, 0, a.stderr);
      assert.equal(b.code, 0, b.stderr);
      assert.equal(proxy.blobGets(layer), 1, 'the layer was downloaded once');
      assert.ok(`${a.stdout}${b.stdout}`.includes('Waiting') || `${a.stdout}${b.stdout}`.includes('Already exists'), a.stdout + b.stdout);
      const images = await s.engine.images();
      assert.equal(images.length, 1);
      await assertImageTree(s.engine, `${proxy.url}/bb:latest`, tree);
      const listing = await storeListing(s.root);
      assert.deepEqual(listing.filter((p) => p.includes('/tmp/') || p.startsWith('content/')), []);
    } finally {
      proxy.setHandler(undefined);
      await s.dispose();
    }
  });
});
