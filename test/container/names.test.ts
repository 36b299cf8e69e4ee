import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { randomName, validateName } from '../../src/container/names.js';

describe('container names', () => {
  it('a random name is adjective_surname, never one that is taken; digits are appended once the plain names run short', () => {
    const taken = new Set<string>();
    for (let i = 0; i < 300; i++) {
      const n = randomName((x) => taken.has(x));
      assert.match(n, /^[a-z]+_[a-z]+\d*$/);
      assert.ok(!taken.has(n), n);
      taken.add(n);
    }
    // Every plain name taken: what comes back carries digits.
    const asked: string[] = [];
    const n = randomName((x) => (asked.push(x), /^[a-z]+_[a-z]+$/.test(x) || taken.has(x)));
    assert.match(n, /^[a-z]+_[a-z]+\d+$/);
    assert.ok(asked.length > 10, 'the plain names were tried first');
  });

  it('a given name follows docker\'s rule, with or without the leading /', () => {
    assert.equal(validateName('/web-1'), 'web-1');
    assert.throws(() => validateName('-x'), /Invalid container name/);
  });
});
