import { test, describe, beforeEach, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { ContentStore } from '../../src/content/content-store.js';
import { isStrataError, type ErrorCode } from '../../src/errors.js';
import { sha256, type Digest } from '../../src/util/digest.js';

export interface StoreFixture {
  store: ContentStore;
  /** A second, independent handle on the same storage (as another process would have). */
  reopen(): ContentStore;
  cleanup(): Promise<void>;
}

const MiB = 1 << 20;

function chunked(data: Buffer, size = 64 * 1024): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) out.push(data.subarray(i, i + size));
  return out;
}

/** Yields `data` then fails, as a dropped connection does. */
async function* interrupted(data: Buffer): AsyncGenerator<Buffer> {
  yield* chunked(data);
  throw new Error('connection reset');
}

async function collect(r: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of r) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

async function listAll(store: ContentStore): Promise<Digest[]> {
  const out: Digest[] = [];
  for await (const b of store.list()) out.push(b.digest);
  return out;
}

const hasCode = (code: ErrorCode, re?: RegExp) => (e: unknown) => isStrataError(e, code) && (re === undefined || re.test(e.message));

/** The behaviour every ContentStore must have; run with a factory for the implementation under test. */
export function contentStoreSuite(name: string, make: () => Promise<StoreFixture>): void {
  describe(`ContentStore conformance: ${name}`, () => {
    let fx: StoreFixture;
    let store: ContentStore;
    beforeEach(async () => {
      fx = await make();
      store = fx.store;
    });
    afterEach(async () => {
      await fx.cleanup();
    });

    test('ingest verifies and publishes; info, readBytes, reader, reader with offset, list', async () => {
      const data = randomBytes(3 * MiB + 123);
      const digest = sha256(data);
      assert.equal(await store.info(digest), null);
      const res = await store.ingest('a', chunked(data), { digest, size: data.length });
      assert.deepEqual(res, { digest, size: data.length, created: true });
      assert.deepEqual(await store.info(digest), { digest, size: data.length });
      assert.ok((await store.readBytes(digest, data.length)).equals(data));
      assert.ok((await collect(store.reader(digest))).equals(data));
      assert.ok((await collect(store.reader(digest, MiB + 7))).equals(data.subarray(MiB + 7)));
      assert.equal((await collect(store.reader(digest, data.length))).length, 0);
      assert.deepEqual(await listAll(store), [digest]);
      assert.equal(await store.ingestStatus('a'), null, 'a committed ingest leaves no state');
    });

    test('ingest without expectations computes the digest', async () => {
      const data = Buffer.from('hello');
      const res = await store.ingest('x', Readable.from([data]));
      assert.deepEqual(res, { digest: sha256(data), size: 5, created: true });
    });

    test('digest mismatch names expected and actual, leaves nothing visible', async () => {
      const data = randomBytes(MiB + 5);
      const wrong = sha256('something else');
      await assert.rejects(
        store.ingest('bad', chunked(data), { digest: wrong }),
        hasCode('ErrDigestMismatch', new RegExp(`expected digest ${wrong}, got ${sha256(data)}`)),
      );
      assert.equal(await store.info(wrong), null);
      assert.equal(await store.info(sha256(data)), null);
      assert.deepEqual(await listAll(store), []);
      assert.equal(await store.ingestStatus('bad'), null);
    });

    test('size mismatch, short or long, leaves nothing visible', async () => {
      const data = randomBytes(4096);
      await assert.rejects(store.ingest('s1', [data], { size: 4097 }), hasCode('ErrSizeMismatch', /expected 4097 bytes, got 4096/));
      await assert.rejects(store.ingest('s2', chunked(data, 100), { size: 1000, digest: sha256(data) }), hasCode('ErrSizeMismatch', /expected 1000 bytes/));
      assert.deepEqual(await listAll(store), []);
      assert.equal(await store.ingestStatus('s1'), null);
      assert.equal(await store.ingestStatus('s2'), null);
    });

    test('an interrupted ingest keeps its data and resumes where it stopped', async () => {
      const data = randomBytes(5 * MiB + 17);
      const digest = sha256(data);
      const half = Math.floor(data.length / 2);
      await assert.rejects(store.ingest('r', interrupted(data.subarray(0, half)), { digest, size: data.length }), /connection reset/);
      assert.equal(await store.info(digest), null, 'a partial blob is not visible');
      assert.deepEqual(await listAll(store), []);
      const status = await store.ingestStatus('r');
      assert.ok(status);
      assert.equal(status.offset, half);
      assert.equal(status.ref, 'r');
      // Another handle (another process) sees the same state and can finish it.
      const other = fx.reopen();
      const res = await other.ingest('r', chunked(data.subarray(status.offset)), { digest, size: data.length, resumeFrom: status.offset });
      assert.deepEqual(res, { digest, size: data.length, created: true });
      assert.ok((await collect(store.reader(digest))).equals(data));
      assert.equal(await store.ingestStatus('r'), null);
    });

    test('resume from an earlier offset discards what follows; a later one is refused', async () => {
      const data = randomBytes(2 * MiB);
      const digest = sha256(data);
      await assert.rejects(store.ingest('e', interrupted(data.subarray(0, MiB + 10)), { digest }), /connection reset/);
      await assert.rejects(store.ingest('e', [data.subarray(MiB + 20)], { digest, resumeFrom: MiB + 20 }), hasCode('ErrInvalidArgument', /only 1048586 bytes/));
      const res = await store.ingest('e', [data.subarray(1000)], { digest, resumeFrom: 1000 });
      assert.equal(res.digest, digest);
      await assert.rejects(store.ingest('none', [data], { resumeFrom: 5 }), hasCode('ErrNotFound'));
    });

    test('a corrupted resume is caught by the digest check', async () => {
      const data = randomBytes(MiB);
      const digest = sha256(data);
      await assert.rejects(store.ingest('c', interrupted(data.subarray(0, 1000)), { digest }), /connection reset/);
      const tampered = Buffer.from(data.subarray(1000));
      tampered[0]! ^= 1;
      await assert.rejects(store.ingest('c', [tampered], { digest, resumeFrom: 1000 }), hasCode('ErrDigestMismatch'));
      assert.deepEqual(await listAll(store), []);
    });

    test('abortIngest drops the kept data', async () => {
      await assert.rejects(store.ingest('ab', interrupted(Buffer.alloc(100)), {}), /connection reset/);
      assert.equal((await store.ingestStatus('ab'))?.offset, 100);
      await store.abortIngest('ab');
      assert.equal(await store.ingestStatus('ab'), null);
      await store.abortIngest('ab');
    });

    test('a blob already present is not ingested again; the source is not needed', async () => {
      const data = randomBytes(1000);
      const digest = sha256(data);
      await store.ingest('one', [data], { digest });
      let pulled = false;
      async function* source(): AsyncGenerator<Buffer> {
        pulled = true;
        yield data;
      }
      assert.deepEqual(await store.ingest('two', source(), { digest, size: 1000 }), { digest, size: 1000, created: false });
      assert.equal(pulled, false);
      await assert.rejects(store.ingest('three', [data], { digest, size: 999 }), hasCode('ErrSizeMismatch'));
    });

    test('concurrent ingests of one digest from two handles both succeed, one blob results', async () => {
      const data = randomBytes(4 * MiB);
      const digest = sha256(data);
      const other = fx.reopen();
      const results = await Promise.all([store.ingest('p1', chunked(data), {}), other.ingest('p2', chunked(data), { digest })]);
      assert.deepEqual(results.map((r) => r.digest), [digest, digest]);
      assert.equal(results.filter((r) => r.created).length, 1);
      assert.deepEqual(await listAll(store), [digest]);
      assert.ok((await store.readBytes(digest, 4 * MiB)).equals(data));
    });

    test('one writer per ref: a second writer is refused while the first runs', async () => {
      let release!: () => void;
      const gate = new Promise<void>((r) => (release = r));
      let started!: () => void;
      const running = new Promise<void>((r) => (started = r));
      async function* slow(): AsyncGenerator<Buffer> {
        yield Buffer.from('first ');
        started();
        await gate;
        yield Buffer.from('part');
      }
      const first = store.ingest('same', slow());
      await running;
      await assert.rejects(fx.reopen().ingest('same', [Buffer.from('x')]), hasCode('ErrUnavailable'));
      release();
      assert.equal((await first).digest, sha256('first part'));
    });

    test('gc keeps what it is told to and removes the rest; delete', async () => {
      const ds: Digest[] = [];
      for (let i = 0; i < 4; i++) ds.push((await store.ingest(`g${i}`, [Buffer.from(`blob ${i}`)])).digest);
      assert.equal(await store.gc(new Set([ds[1]!, ds[3]!])), 2);
      assert.deepEqual((await listAll(store)).sort(), [ds[1]!, ds[3]!].sort());
      assert.equal(await store.gc(new Set(ds)), 0);
      await store.delete(ds[1]!);
      await assert.rejects(store.delete(ds[1]!), hasCode('ErrNotFound'));
      assert.deepEqual(await listAll(store), [ds[3]!]);
    });

    test('readBytes is bounded; a missing blob is ErrNotFound for every reader', async () => {
      const data = randomBytes(2000);
      const { digest } = await store.ingest('b', [data]);
      await assert.rejects(store.readBytes(digest, 1999), hasCode('ErrLimit'));
      const missing = sha256('missing');
      await assert.rejects(store.readBytes(missing, 10), hasCode('ErrNotFound'));
      await assert.rejects(collect(store.reader(missing)), hasCode('ErrNotFound'));
      assert.equal(await store.info(missing), null);
    });

    test('digest arguments are validated', async () => {
      await assert.rejects(store.info('sha256:../../etc/passwd' as Digest), hasCode('ErrInvalidArgument'));
    });
  });
}
