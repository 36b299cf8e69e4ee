import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { cleanEntryName, resolveInRoot, SafeParents } from '../../src/archive/root-path.js';
import { isStrataError } from '../../src/errors.js';

describe('root-path', () => {
  it('cleanEntryName normalises and refuses to climb out', () => {
    const ok: Array<[string, string]> = [
      ['./a/b/', 'a/b'],
      ['/a//b/./c', 'a/b/c'],
      ['a/x/../b', 'a/b'],
      ['/../etc/passwd', 'etc/passwd'],
      ['./', ''],
      ['.', ''],
      ['/', ''],
      ['..foo/bar', '..foo/bar'],
    ];
    for (const [raw, want] of ok) assert.equal(cleanEntryName(raw), want, raw);
    for (const bad of ['..', '../x', 'a/../../x', './../x', 'a\0b']) {
      assert.throws(() => cleanEntryName(bad), (e) => isStrataError(e, 'ErrCorrupt'), bad);
    }
  });

  describe('with a root', () => {
    let tmp: string;
    let root: string;
    before(() => {
      tmp = mkdtempSync(join(tmpdir(), 'strata-rootpath-'));
      root = join(tmp, 'root');
      mkdirSync(join(root, 'etc'), { recursive: true });
      mkdirSync(join(root, 'usr/lib'), { recursive: true });
      writeFileSync(join(root, 'etc/passwd'), 'inside');
      writeFileSync(join(tmp, 'secret'), 'outside');
      symlinkSync('/etc', join(root, 'abs-etc'));
      symlinkSync('../../../../../../secret', join(root, 'climb'));
      symlinkSync('usr/lib', join(root, 'lib'));
      symlinkSync('../..', join(root, 'usr/lib/up'));
      symlinkSync('loop2', join(root, 'loop1'));
      symlinkSync('loop1', join(root, 'loop2'));
      writeFileSync(join(root, 'file'), 'f');
    });
    after(() => rmSync(tmp, { recursive: true, force: true }));

    it('resolves symlinks as if the root were /', () => {
      assert.equal(resolveInRoot(root, '/abs-etc/passwd'), join(root, 'etc/passwd'));
      assert.equal(resolveInRoot(root, 'climb'), join(root, 'secret'));
      assert.equal(resolveInRoot(root, '/lib/up/../../etc/passwd'), join(root, 'etc/passwd'));
      assert.equal(resolveInRoot(root, '../../..'), root);
      assert.equal(resolveInRoot(root, '/lib/new/dir'), join(root, 'usr/lib/new/dir'));
      assert.equal(resolveInRoot(root, '/'), root);
    });

    it('stops symlink loops with ELOOP', () => {
      assert.throws(() => resolveInRoot(root, '/loop1/x'), (e) => isStrataError(e, 'ErrInvalidArgument') && /ELOOP/.test(e.message));
    });

    it('SafeParents refuses a symlink or a file in the parent chain and creates missing directories', () => {
      const p = new SafeParents(root);
      assert.equal(p.ensure('new/deep/dir'), join(root, 'new/deep/dir'));
      assert.throws(() => p.ensure('abs-etc/x'), (e) => isStrataError(e, 'ErrCorrupt') && /breakout/.test(e.message));
      assert.throws(() => p.check('lib/x'), (e) => isStrataError(e, 'ErrCorrupt') && /breakout/.test(e.message));
      assert.throws(() => p.ensure('file/x'), (e) => isStrataError(e, 'ErrCorrupt') && /not a directory/.test(e.message));
      assert.throws(() => p.check('missing/x'), (e) => isStrataError(e, 'ErrCorrupt') && /does not exist/.test(e.message));
    });
  });
});
