import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, readdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { LocalContentStore } from '../../src/content/local-content-store.js';
import { contentStoreSuite } from './content-store-suite.js';

contentStoreSuite('LocalContentStore', async () => {
  const root = await mkdtemp(join(tmpdir(), 'strata-content-'));
  return {
    store: new LocalContentStore(root),
    reopen: () => new LocalContentStore(root),
    cleanup: () => rm(root, { recursive: true, force: true }),
  };
});

const tmpRoots: string[] = [];
after(async () => {
  for (const r of tmpRoots) await rm(r, { recursive: true, force: true });
});

const storeModule = fileURLToPath(new URL('../../src/content/local-content-store.ts', import.meta.url));

/** A separate node process ingesting the same deterministic 16 MiB into `root` under its own ref. */
function ingestInChild(root: string, ref: string): Promise<{ digest: string; created: boolean }> {
  const script = `
    import { LocalContentStore } from ${JSON.stringify(storeModule)};
    const data = Buffer.alloc(16 << 20);
    for (let i = 0; i < data.length; i += 4) data.writeUInt32LE(i, i);
    async function* chunks() { for (let i = 0; i < data.length; i += 65536) { yield data.subarray(i, i + 65536); await new Promise((r) => setImmediate(r)); } }
    const r = await new LocalContentStore(process.argv[1]).ingest(process.argv[2], chunks());
    process.stdout.write(JSON.stringify(r));`;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script, root, ref], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as { digest: string; created: boolean }) : reject(new Error(`child exited ${code}`))));
  });
}

test('two processes ingesting the same content concurrently: both succeed, one blob, on-disk layout', async () => {
  const root = await mkdtemp(join(tmpdir(), 'strata-content-'));
  tmpRoots.push(root);
  const results = await Promise.all([ingestInChild(root, 'proc-1'), ingestInChild(root, 'proc-2')]);
  assert.equal(results[0]!.digest, results[1]!.digest);
  assert.equal(results.filter((r) => r.created).length, 1);
  const hex = results[0]!.digest.slice('sha256:'.length);
  assert.deepEqual(await readdir(join(root, 'content', 'blobs', 'sha256')), [hex]);
  const st = await stat(join(root, 'content', 'blobs', 'sha256', hex));
  assert.equal(st.size, 16 << 20);
  assert.equal(st.mode & 0o222, 0, 'blobs are read-only');
  assert.deepEqual(await readdir(join(root, 'content', 'ingest')), []);
  const store = new LocalContentStore(root);
  const info = await store.info(results[0]!.digest as never);
  assert.equal(info?.size, 16 << 20);
});
