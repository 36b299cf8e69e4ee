import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Digester } from '../../src/util/digest.js';

const reference = (chunks: Buffer[]) => {
  const h = createHash('sha256');
  for (const c of chunks) h.update(c);
  return `sha256:${h.digest('hex')}`;
};

test('the off-thread digester agrees with node:crypto, in order, whatever the chunking and timing', async () => {
  const cases: Buffer[][] = [
    [],
    [Buffer.alloc(0)],
    [Buffer.from('abc')],
    Array.from({ length: 500 }, (_, i) => randomBytes(i % 7 === 0 ? 0 : 1 + ((i * 7919) % 70_000))),
    [randomBytes(3 << 20), randomBytes(1), randomBytes(5 << 20)],
  ];
  for (const chunks of cases) {
    const d = new Digester();
    for (const [i, c] of chunks.entries()) {
      d.update(c);
      // Updates arrive both while a hash job runs and after it finished.
      if (i % 50 === 0) await new Promise((r) => setImmediate(r));
    }
    assert.equal(await d.digest(), reference(chunks));
    assert.equal(d.size, chunks.reduce((n, c) => n + c.length, 0));
  }
  assert.equal(await new Digester().digest(), 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
});
