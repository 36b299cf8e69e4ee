import { test } from 'node:test';
import assert from 'node:assert/strict';
import { familiarName, familiarString, formatReference, fullName, looksLikeImageId, parseReference, withDefaultTag } from '../../src/image/reference.js';
import { isStrataError } from '../../src/errors.js';

const hex = 'a'.repeat(64);

// input -> [full normalised form (with default tag), familiar string (with default tag), familiar name]
const valid: Array<[string, string, string, string]> = [
  ['busybox', 'docker.io/library/busybox:latest', 'busybox:latest', 'busybox'],
  ['busybox:1.36', 'docker.io/library/busybox:1.36', 'busybox:1.36', 'busybox'],
  ['library/busybox', 'docker.io/library/busybox:latest', 'busybox:latest', 'busybox'],
  ['docker.io/busybox', 'docker.io/library/busybox:latest', 'busybox:latest', 'busybox'],
  ['index.docker.io/library/busybox', 'docker.io/library/busybox:latest', 'busybox:latest', 'busybox'],
  ['user/repo', 'docker.io/user/repo:latest', 'user/repo:latest', 'user/repo'],
  ['library/a/b', 'docker.io/library/a/b:latest', 'library/a/b:latest', 'library/a/b'],
  ['host:5000/a/b:tag', 'host:5000/a/b:tag', 'host:5000/a/b:tag', 'host:5000/a/b'],
  ['localhost/x', 'localhost/x:latest', 'localhost/x:latest', 'localhost/x'],
  ['localhost:5000/x', 'localhost:5000/x:latest', 'localhost:5000/x:latest', 'localhost:5000/x'],
  ['localhost:5000', 'docker.io/library/localhost:5000', 'localhost:5000', 'localhost'],
  ['quay.io/a/b-c_d.e__f', 'quay.io/a/b-c_d.e__f:latest', 'quay.io/a/b-c_d.e__f:latest', 'quay.io/a/b-c_d.e__f'],
  ['Foo/bar', 'Foo/bar:latest', 'Foo/bar:latest', 'Foo/bar'],
  ['[::1]:5000/x:T_a.g-1', '[::1]:5000/x:T_a.g-1', '[::1]:5000/x:T_a.g-1', '[::1]:5000/x'],
  [`name@sha256:${hex}`, `docker.io/library/name@sha256:${hex}`, `name@sha256:${hex}`, 'name'],
  [`name:tag@sha256:${hex}`, `docker.io/library/name:tag@sha256:${hex}`, `name:tag@sha256:${hex}`, 'name'],
  ['a'.repeat(10), `docker.io/library/${'a'.repeat(10)}:latest`, `${'a'.repeat(10)}:latest`, 'a'.repeat(10)],
  [`x:${'t'.repeat(128)}`, `docker.io/library/x:${'t'.repeat(128)}`, `x:${'t'.repeat(128)}`, 'x'],
];

for (const [input, full, familiar, name] of valid) {
  test(`parse ${input.slice(0, 60)}`, () => {
    const ref = withDefaultTag(parseReference(input));
    assert.equal(formatReference(ref), full);
    assert.equal(familiarString(ref), familiar);
    assert.equal(familiarName(ref), name);
    assert.equal(fullName(ref), full.replace(/(:[\w][\w.-]*)?(@sha256:[a-f0-9]+)?$/, ''));
    // Parsing the normalised and the familiar forms gives the same reference back.
    assert.deepEqual(parseReference(full), ref);
    assert.deepEqual(withDefaultTag(parseReference(familiar)), ref);
  });
}

test('tag and digest accessors; no default tag unless asked', () => {
  const r = parseReference(`host:5000/a/b:v1@sha256:${hex}`);
  assert.deepEqual(r, { domain: 'host:5000', path: 'a/b', tag: 'v1', digest: `sha256:${hex}` });
  assert.equal(parseReference('busybox').tag, undefined);
  assert.equal(withDefaultTag(parseReference(`busybox@sha256:${hex}`)).tag, undefined);
});

const invalid: Array<[string, RegExp, string?]> = [
  ['', /at least one component/],
  ['Busybox', /^invalid reference format: repository name \(library\/Busybox\) must be lowercase$/],
  ['user/Repo', /repository name \(user\/Repo\) must be lowercase/],
  [hex, /cannot specify 64-byte hexadecimal strings/],
  ['busybox:', /^invalid reference format/],
  ['busybox:-tag', /^invalid reference format/],
  [`busybox:${'t'.repeat(129)}`, /^invalid reference format/],
  ['busybox:a:b', /^invalid reference format/],
  ['a//b', /^invalid reference format/],
  ['a/b/', /^invalid reference format/],
  ['-a/b', /^invalid reference format/],
  ['a_/b', /^invalid reference format/],
  ['a..b', /^invalid reference format/],
  ['with space', /^invalid reference format/],
  ['x@sha256:abc', /^invalid reference format/],
  [`x@sha256:${'A'.repeat(64)}`, /invalid digest/],
  [`x@${hex}`, /^invalid reference format/],
  [`localhost/${'a'.repeat(250)}`, /must not be more than 255 characters/],
  [`x@sha512:${'a'.repeat(128)}`, /only sha256 is supported/, 'ErrUnsupported'],
];

for (const [input, message, code] of invalid) {
  test(`reject ${JSON.stringify(input.slice(0, 40))}`, () => {
    assert.throws(
      () => parseReference(input),
      (e: unknown) => isStrataError(e, (code ?? 'ErrInvalidArgument') as 'ErrInvalidArgument') && message.test(e.message) && !e.message.includes('\n'),
    );
  });
}

test('a name of exactly 255 characters is accepted', () => {
  const path = 'a'.repeat(255 - 'localhost/'.length);
  assert.equal(fullName(parseReference(`localhost/${path}`)).length, 255);
});

test('looksLikeImageId', () => {
  for (const s of [hex, `sha256:${hex}`, 'abc123', `sha256:abc`]) assert.equal(looksLikeImageId(s), true, s);
  for (const s of ['busybox', `${hex}a`, 'ABC', 'sha256:', 'sha512:abc', '']) assert.equal(looksLikeImageId(s), false, s);
});
