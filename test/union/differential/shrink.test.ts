import { test } from 'node:test';
import assert from 'node:assert/strict';
import { shrink } from './shrink.js';

test('shrink finds the 1-minimal failing subset, keeping order', async () => {
  const items = Array.from({ length: 30 }, (_, i) => i);
  let runs = 0;
  const fails = async (xs: readonly number[]) => {
    runs++;
    // Fails only when 4 comes before 17 and 23 is there too.
    return xs.includes(23) && xs.indexOf(4) >= 0 && xs.indexOf(4) < xs.indexOf(17);
  };
  assert.deepEqual(await shrink(items, fails), [4, 17, 23]);
  assert.ok(runs < 120, `${runs} runs`);
  assert.deepEqual(await shrink([5], async () => true), []);
  assert.deepEqual(await shrink([1, 2], async (xs) => xs.length === 2), [1, 2]);
});
