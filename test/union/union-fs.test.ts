import { after, before, describe, it, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, link, lstat, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openUnion } from '../../src/union/open-union.js';
import { native } from '../../src/native/native.js';
import { unmountUnder } from '../fixtures/unmount.js';
import { isRoot, requireCap } from '../helpers/caps.js';
import { KernelSide } from './differential/kernel-side.js';
import { runSequence } from './differential/run-sequence.js';
import type { LowerEntry, Op } from './differential/sequence.js';

let tmp: string;
let n = 0;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'strata-union-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/** Fresh branches: `files` maps branch index → { 'rel/path': content | {dir} | {link} }. */
async function branches(spec: Array<Record<string, string | { link: string } | { dir: true }>>): Promise<string[]> {
  const out: string[] = [];
  for (const files of spec) {
    const b = join(tmp, `b${n++}`);
    await mkdir(b);
    for (const [rel, v] of Object.entries(files)) {
      const p = join(b, rel);
      await mkdir(join(p, '..'), { recursive: true });
      if (typeof v === 'string') await writeFile(p, v);
      else if ('link' in v) await symlink(v.link, p);
      else await mkdir(p, { recursive: true });
    }
    out.push(b);
  }
  return out;
}

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as { code: string }).code;
  }
  return 'OK';
}

describe('union lookup and listing', () => {
  it('reads top-down and merges directories without duplicates, hiding whiteouts', async () => {
    const [up, mid, low] = await branches([
      { 'd/top': 'T', 'd/.wh.gone': '' },
      { 'd/x': 'mid-x', 'd/gone': 'G', 'e/.wh..wh..opq': '', 'e/new': 'n' },
      { 'd/x': 'low-x', 'd/y': 'Y', 'e/old': 'o', 'f': 'F' },
    ]);
    const u = await openUnion(`${up}=rw:${mid}=ro:${low}=ro`);
    assert.equal(await u.readFile('/d/x', 'utf8'), 'mid-x');
    assert.deepEqual(await u.readdir('/d'), ['top', 'x', 'y']);
    assert.deepEqual(await u.readdir('/e'), ['new']);
    assert.deepEqual(await u.readdir('/'), ['d', 'e', 'f']);
    assert.equal(await code(u.stat('/d/gone')), 'ENOENT');
    assert.equal(await code(u.stat('/d/.wh.gone')), 'ENOENT');
    const ents = await u.readdir('/', { withFileTypes: true });
    assert.deepEqual(ents.map((e) => [e.name, e.isDirectory()]), [['d', true], ['e', true], ['f', false]]);
    const names: string[] = [];
    for await (const e of await u.opendir('/d')) names.push(e.name);
    assert.deepEqual(names, ['top', 'x', 'y']);
  });

  it('raises node-shaped errors', async () => {
    const [up, low] = await branches([{}, { f: 'x', d: { dir: true } }]);
    const u = await openUnion([{ path: up!, mode: 'rw' }, { path: low!, mode: 'ro' }]);
    const e = (await u.readFile('/nope').catch((x) => x)) as NodeJS.ErrnoException;
    assert.equal(e.code, 'ENOENT');
    assert.equal(e.syscall, 'open');
    assert.equal(e.path, '/nope');
    assert.match(e.message, /^ENOENT: no such file or directory, open '\/nope'$/);
    assert.equal(await code(u.readFile('/f/x')), 'ENOTDIR');
    assert.equal(await code(u.writeFile('/d', 'x')), 'EISDIR');
    assert.equal(await code(u.mkdir('/d')), 'EEXIST');
    assert.equal(await code(u.rmdir('/f')), 'ENOTDIR');
    assert.equal(await code(u.stat('/' + 'a'.repeat(256))), 'ENAMETOOLONG');
    await u.writeFile('/d/c', '');
    assert.equal(await code(u.rmdir('/d')), 'ENOTEMPTY');
    assert.equal(await code(u.rename('/d', '/d/c/e')), 'ENOTDIR');
    assert.equal(await code(u.rename('/d', '/d/sub')), 'EINVAL');
  });
});

describe('copy-up and whiteouts', () => {
  it('copies a lower file up on its first write, with its metadata, leaving the lower branch untouched', async () => {
    const [up, low] = await branches([{}, { 'etc/motd': 'hello' }]);
    await chmod(join(low!, 'etc/motd'), 0o640);
    const u = await openUnion(`${up}=rw:${low}=ro`);
    await u.appendFile('/etc/motd', ' world');
    assert.equal(await u.readFile('/etc/motd', 'utf8'), 'hello world');
    assert.equal(await readFile(join(low!, 'etc/motd'), 'utf8'), 'hello');
    assert.equal(await readFile(join(up!, 'etc/motd'), 'utf8'), 'hello world');
    assert.equal((await lstat(join(up!, 'etc/motd'))).mode & 0o777, 0o640);
    assert.equal((await u.stat('/etc/motd')).size, 11);
  });

  it('copies up on metadata-only changes (chmod, chown, utimes)', async () => {
    const [up, low] = await branches([{}, { a: 'A', b: 'B', c: 'C' }]);
    const u = await openUnion(`${up}=rw:${low}=ro`);
    await u.chmod('/a', 0o600);
    await u.chown('/b', 123, 456);
    await u.utimes('/c', 1000, 2000);
    assert.equal((await lstat(join(up!, 'a'))).mode & 0o777, 0o600);
    assert.equal((await lstat(join(up!, 'b'))).uid, 123);
    assert.equal((await lstat(join(up!, 'c'))).mtimeMs, 2000_000);
    assert.equal(await readFile(join(up!, 'c'), 'utf8'), 'C');
    assert.notEqual((await lstat(join(low!, 'a'))).mode & 0o777, 0o600);
  });

  it('deletes lower entries with whiteouts; creating over a whiteout replaces it; mkdir over one is opaque', async () => {
    const [up, low] = await branches([{}, { f: 'F', 'd/x': 'X', 'd/sub/y': 'Y' }]);
    const u = await openUnion(`${up}=rw:${low}=ro`);
    await u.unlink('/f');
    assert.equal(await code(u.stat('/f')), 'ENOENT');
    assert.ok((await lstat(join(up!, '.wh.f'))).isFile());
    await u.writeFile('/f', 'new');
    assert.equal(await u.readFile('/f', 'utf8'), 'new');
    assert.equal(await code(lstat(join(up!, '.wh.f'))), 'ENOENT');
    await u.rm('/d', { recursive: true });
    assert.deepEqual(await u.readdir('/'), ['f']);
    await u.mkdir('/d');
    assert.deepEqual(await u.readdir('/d'), []);
    assert.ok((await lstat(join(up!, 'd/.wh..wh..opq'))).isFile());
    assert.equal(await readFile(join(low!, 'd/x'), 'utf8'), 'X');
  });

  it('rmdir of a merged directory emptied through the union leaves one whiteout', async () => {
    const [up, low] = await branches([{}, { 'd/x': 'X' }]);
    const u = await openUnion(`${up}=rw:${low}=ro`);
    await u.unlink('/d/x');
    await u.rmdir('/d');
    assert.deepEqual(await readdir(up!), ['.wh.d']);
  });
});

describe('rename, links, symlinks', () => {
  it('renames lower files and whole lower directories (copied up, opaque)', async () => {
    const [up, low] = await branches([{}, { f: 'F', 'd/a': 'A', 'd/s/b': 'B', e: { dir: true } }]);
    const u = await openUnion(`${up}=rw:${low}=ro`);
    await u.rename('/f', '/g');
    assert.equal(await u.readFile('/g', 'utf8'), 'F');
    assert.equal(await code(u.stat('/f')), 'ENOENT');
    await u.rename('/d', '/e');
    assert.deepEqual(await u.readdir('/'), ['e', 'g']);
    assert.equal(await u.readFile('/e/s/b', 'utf8'), 'B');
    assert.equal(await readFile(join(up!, 'e/s/b'), 'utf8'), 'B');
    await u.rename('/e', '/d');
    assert.deepEqual(await u.readdir('/d'), ['a', 's']);
  });

  it('moves a lower directory as mv does: a fresh copy, hardlinks inside kept, opaque only over a lower name', async () => {
    const [up, low] = await branches([{}, { 'd/f': 'F', 'd/s/x': 'X', e: 'lower file' }]);
    await link(join(low!, 'd/f'), join(low!, 'd/s/f2'));
    const u = await openUnion(`${up}=rw:${low}=ro`);
    await u.unlink('/e');
    await u.rename('/d', '/e');
    assert.deepEqual(await readdir(join(up!, 'e')).then((x) => x.sort()), ['.wh..wh..opq', 'f', 's']);
    assert.equal((await lstat(join(up!, 'e/f'))).ino, (await lstat(join(up!, 'e/s/f2'))).ino);
    assert.deepEqual((await readdir(join(up!, 'e/s'))).sort(), ['f2', 'x']);
    assert.deepEqual((await readdir(up!)).sort(), ['.wh.d', 'e']);
    await u.mkdir('/fresh');
    await u.rename('/e/s', '/fresh/s');
    // Under a directory only the upper branch has, nothing can show through: no marker.
    assert.deepEqual((await readdir(join(up!, 'fresh/s'))).sort(), ['f2', 'x']);
    assert.equal(await readFile(join(low!, 'd/s/x'), 'utf8'), 'X');
  });

  it('makes a directory opaque when it is created over any whited-out lower name, or moved under a merged directory', async () => {
    const [up, low] = await branches([{}, { f: 'file', m: { dir: true } }]);
    const u = await openUnion(`${up}=rw:${low}=ro`);
    await u.unlink('/f');
    await u.mkdir('/f');
    assert.ok((await lstat(join(up!, 'f/.wh..wh..opq'))).isFile());
    await u.mkdir('/plain');
    assert.deepEqual(await readdir(join(up!, 'plain')), []);
    await u.rename('/plain', '/m/moved');
    assert.deepEqual(await readdir(join(up!, 'm/moved')), ['.wh..wh..opq']);
    assert.deepEqual(await u.readdir('/m/moved'), []);
  });

  it('renaming one link of an inode onto another link of it does nothing (rename(2)): lower, upper, symlink', async () => {
    const [up, low] = await branches([{}, { f: 'F' }]);
    await link(join(low!, 'f'), join(low!, 'g'));
    const u = await openUnion(`${up}=rw:${low}=ro`);
    await u.rename('/f', '/g');
    assert.deepEqual(await u.readdir('/'), ['f', 'g']);
    assert.deepEqual(await readdir(up!), []);
    await u.link('/f', '/h');
    await u.rename('/h', '/f');
    assert.deepEqual(await u.readdir('/'), ['f', 'g', 'h']);
    assert.equal((await u.stat('/h')).nlink, 2);
    await u.symlink('f', '/s');
    await u.link('/s', '/s2');
    await u.rename('/s2', '/s');
    assert.deepEqual(await u.readdir('/'), ['f', 'g', 'h', 's', 's2']);
  });

  it('hardlinks a lower file after copying it up', async () => {
    const [up, low] = await branches([{}, { f: 'F' }]);
    const u = await openUnion(`${up}=rw:${low}=ro`);
    await u.link('/f', '/h');
    await u.appendFile('/h', '+');
    assert.equal(await u.readFile('/f', 'utf8'), 'F+');
    assert.equal((await u.stat('/f')).nlink, 2);
  });

  it('resolves symlinks inside the union root and never escapes it', async () => {
    const [up, low] = await branches([{}, { 'etc/passwd': 'union', abs: { link: '/etc/passwd' }, up: { link: '../../../../etc/passwd' }, loop: { link: 'loop' }, dir: { link: 'etc' } }]);
    const u = await openUnion(`${up}=rw:${low}=ro`);
    assert.equal(await u.readFile('/abs', 'utf8'), 'union');
    assert.equal(await u.readFile('/up', 'utf8'), 'union');
    assert.equal(await u.readFile('/dir/passwd', 'utf8'), 'union');
    assert.equal(await u.readFile('/../../etc/passwd', 'utf8'), 'union');
    assert.equal(await code(u.readFile('/loop')), 'ELOOP');
    assert.equal(await u.readlink('/abs'), '/etc/passwd');
    assert.equal(await u.realpath('/dir/passwd'), '/etc/passwd');
    await u.symlink('/etc/new', '/dangling');
    await u.writeFile('/dangling', 'made');
    assert.equal(await readFile(join(up!, 'etc/new'), 'utf8'), 'made');
    assert.equal(await code(u.symlink('x', '/abs')), 'EEXIST');
  });
});

describe('read-only unions and the rest of the surface', () => {
  it('refuses every write with EROFS when the top branch is ro', async () => {
    const [a, b] = await branches([{ f: 'F' }, { g: 'G' }]);
    const u = await openUnion(`${a}=ro:${b}=ro`);
    assert.equal(await u.readFile('/g', 'utf8'), 'G');
    for (const op of [() => u.writeFile('/f', 'x'), () => u.writeFile('/new', 'x'), () => u.unlink('/g'), () => u.mkdir('/d'), () => u.chmod('/f', 0o600), () => u.rename('/f', '/h'), () => u.symlink('a', '/l'), () => u.access('/f', 2)]) {
      assert.equal(await code(op()), 'EROFS', op.toString());
    }
    assert.deepEqual(await readdir(a!), ['f']);
  });

  it('open/FileHandle, truncate, copyFile, streams, access, mkdir -p', async () => {
    const [up, low] = await branches([{}, { f: '0123456789' }]);
    const u = await openUnion(`${up}=rw:${low}=ro`);
    const h = await u.open('/f', 'r+');
    await h.write(Buffer.from('ab'), 0, 2, 0);
    await h.truncate(5);
    await h.sync();
    assert.equal((await h.stat()).size, 5);
    await h.close();
    assert.equal(await u.readFile('/f', 'utf8'), 'ab234');
    await u.truncate('/f', 2);
    await u.copyFile('/f', '/g');
    assert.equal(await code(u.copyFile('/f', '/g', 1)), 'EEXIST');
    assert.equal(await u.readFile('/g', 'utf8'), 'ab');
    assert.equal(await u.mkdir('/p/q/r', { recursive: true }), '/p');
    await new Promise<void>((res, rej) => {
      const w = u.createWriteStream('/p/q/r/s');
      w.on('error', rej).on('finish', res);
      w.write('stream ');
      w.end('data');
    });
    const chunks: Buffer[] = [];
    for await (const c of u.createReadStream('/p/q/r/s', { start: 7 })) chunks.push(c as Buffer);
    assert.equal(Buffer.concat(chunks).toString(), 'data');
    await u.access('/g');
    assert.equal(await code(u.access('/zz')), 'ENOENT');
  });

  it("the seeds' AUFS example: a and b both rw, writes land in the leftmost", async () => {
    const [a, b] = await branches([{ 'a.txt': 'from a' }, { 'b.txt': 'from b' }]);
    const u = await openUnion(`${a}=rw:${b}=rw`);
    assert.deepEqual(await u.readdir('/'), ['a.txt', 'b.txt']);
    await u.writeFile('/c.txt', 'new');
    await u.appendFile('/b.txt', '!');
    assert.deepEqual((await readdir(a!)).sort(), ['a.txt', 'b.txt', 'c.txt']);
    assert.equal(await readFile(join(b!, 'b.txt'), 'utf8'), 'from b');
    assert.equal(await u.readFile('/b.txt', 'utf8'), 'from b!');
  });
});

describe('bad input, answered as the kernel answers (overlayfs mount, chrooted)', () => {
  let kernel: KernelSide | undefined;
  let scratch: string;
  before(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'strata-union-bad-'));
    if (isRoot) kernel = KernelSide.start(scratch);
  });
  after(async () => {
    await kernel?.stop();
    unmountUnder(scratch);
    await rm(scratch, { recursive: true, force: true });
  });

  const file = (p: string, data = p): LowerEntry => ({ kind: 'file', p, data, mode: 0o644, uid: 0, gid: 0, mtime: 1_000_000 });
  const lowers: LowerEntry[][] = [[file('etc/passwd', 'union passwd'), { kind: 'dir', p: 'a/b', mode: 0o755 }], [file('etc/hosts'), file('x')]];
  let seed = 0;

  /**
   * Run `ops` on both sides: codes and trees after every step, the exported uppers and the lower
   * branches (never written) must agree; a sentinel tree next to the branches (what an escape from the
   * union root would reach) must be untouched. Returns the union's code for each operation.
   */
  async function both(t: TestContext, ops: Op[], opts: { readOnly?: boolean } = {}): Promise<string[] | null> {
    if (!requireCap(t, 'root (kernel overlayfs mount, chroot)', isRoot)) return null;
    await mkdir(join(scratch, 'etc'), { recursive: true });
    await writeFile(join(scratch, 'etc/passwd'), 'host passwd');
    const outside = async () => (await readdir(scratch, { recursive: true })).sort().join(' ') + (await readFile(join(scratch, 'etc/passwd'), 'utf8'));
    const before = await outside();
    const codes: string[] = [];
    const d = await runSequence(scratch, kernel!, { seed: seed++, lowers, ops }, { ...opts, codes });
    assert.equal(d, null, d?.text);
    assert.equal(await outside(), before);
    return codes;
  }

  it('clamps `..` at the union root', async (t) => {
    const codes = await both(t, [
      { op: 'write', p: '../../../etc/passwd', data: 'through ..' },
      { op: 'mkdir', p: 'a/b/../../../../c' },
      { op: 'write', p: 'a/b/../../../x', data: 'x' },
      { op: 'symlink', target: '../../../../../etc/hosts', p: 'a/up' },
      { op: 'append', p: 'a/up', data: '+' },
      { op: 'rename', p: '../../a', q: '../../../d' },
      // A call that removes or renames a name refuses `..`, `.` and `/` with the kernel's codes.
      { op: 'rmdir', p: '..' },
      { op: 'rmdir', p: 'd/.' },
      { op: 'rmdir', p: '' },
      { op: 'rename', p: 'd/..', q: 'e' },
      { op: 'unlink', p: 'd/..' },
      { op: 'mkdir', p: 'd/..' },
    ]);
    if (codes) assert.deepEqual(codes, ['OK', 'OK', 'OK', 'OK', 'OK', 'OK', 'ENOTEMPTY', 'EINVAL', 'EBUSY', 'EBUSY', 'EISDIR', 'EEXIST']);
  });

  it('resolves absolute symlinks inside the union', async (t) => {
    const codes = await both(t, [
      { op: 'symlink', target: '/etc/passwd', p: 'abs' },
      { op: 'write', p: 'abs', data: 'via absolute link' },
      { op: 'symlink', target: '/', p: 'root' },
      { op: 'write', p: 'root/etc/../root/new', data: 'n' },
      { op: 'symlink', target: '/no/such/dir/f', p: 'dangling' },
      { op: 'write', p: 'dangling', data: 'd' },
      { op: 'chmod', p: 'abs', mode: 0o600 },
      { op: 'link', p: 'abs', q: 'hard' },
    ]);
    if (codes) assert.deepEqual(codes, ['OK', 'OK', 'OK', 'OK', 'OK', 'ENOENT', 'OK', 'OK']);
  });

  it('answers ELOOP for symlink loops and for more than 40 links in one path walk', async (t) => {
    const chain: Op[] = Array.from({ length: 41 }, (_, i) => ({ op: 'symlink', target: `l${i + 1}`, p: `l${i}` }));
    const codes = await both(t, [
      { op: 'symlink', target: 'loop', p: 'loop' },
      { op: 'write', p: 'loop', data: 'x' },
      { op: 'symlink', target: 'q/x', p: 'p' },
      { op: 'symlink', target: 'p/y', p: 'q' },
      { op: 'mkdir', p: 'p/z' },
      { op: 'chmod', p: 'q', mode: 0o600 },
      ...chain,
      { op: 'write', p: 'l1', data: '40 links: fine' },
      { op: 'write', p: 'l0', data: '41 links: ELOOP' },
      { op: 'unlink', p: 'loop' },
    ]);
    if (codes) assert.deepEqual(codes, ['OK', 'ELOOP', 'OK', 'OK', 'ELOOP', 'ELOOP', ...chain.map(() => 'OK'), 'OK', 'ELOOP', 'OK']);
  });

  it('answers ENAMETOOLONG for a name over NAME_MAX and a path of PATH_MAX or more', async (t) => {
    const deep = (len: number) => 'a/'.repeat(len >> 1).slice(0, len - 1); // '/' + this is `len` characters long
    const codes = await both(t, [
      { op: 'write', p: 'n'.repeat(256), data: 'x' },
      { op: 'write', p: 'n'.repeat(255), data: 'max' },
      { op: 'mkdir', p: `a/${'d'.repeat(256)}` },
      { op: 'rename', p: 'x', q: 'r'.repeat(256) },
      { op: 'symlink', target: 't'.repeat(4096), p: 'longlink' },
      { op: 'write', p: deep(4095), data: 'x' },
      { op: 'write', p: deep(4096), data: 'x' },
      { op: 'unlink', p: deep(5000) },
    ]);
    if (codes) assert.deepEqual(codes, ['ENAMETOOLONG', 'OK', 'ENAMETOOLONG', 'ENAMETOOLONG', 'ENAMETOOLONG', 'ENOENT', 'ENAMETOOLONG', 'ENAMETOOLONG']);
  });

  it('refuses every write to a read-only union with EROFS, as a read-only overlay does, writing nothing', async (t) => {
    const codes = await both(
      t,
      [
        { op: 'write', p: 'x', data: 'w' },
        { op: 'write', p: 'new', data: 'w' },
        { op: 'append', p: 'etc/passwd', data: 'a' },
        { op: 'truncate', p: 'x', len: 0 },
        { op: 'mkdir', p: 'd' },
        { op: 'rmdir', p: 'a/b' },
        { op: 'unlink', p: 'x' },
        { op: 'rename', p: 'x', q: 'y' },
        { op: 'link', p: 'x', q: 'y' },
        { op: 'symlink', target: 'x', p: 'y' },
        { op: 'chmod', p: 'x', mode: 0o600 },
        { op: 'chown', p: 'x', uid: 1, gid: 1 },
        { op: 'utimes', p: 'x', t: 1 },
        // The kernel checks the mount before looking the last name up: EROFS, not ENOENT.
        { op: 'unlink', p: 'missing' },
        { op: 'rmdir', p: 'missing' },
        { op: 'rename', p: 'missing', q: 'y' },
        { op: 'write', p: 'no/such/dir', data: 'w' },
        { op: 'mkdir', p: 'etc' },
        { op: 'chmod', p: 'missing', mode: 0o600 },
      ],
      { readOnly: true },
    );
    if (codes) assert.deepEqual(codes, [...Array(16).fill('EROFS'), 'ENOENT', 'EEXIST', 'ENOENT']);
  });
});

describe('union copy-up keeps xattrs', () => {
  it('a file copied up for a write or a chmod and a directory copied up for a new entry keep their xattrs (file capabilities too, as root); overlayfs\'s own stay behind', async () => {
    const [up, low] = await branches([{}, { 'bin/ping': 'PING', 'bin/tool': 'T' }]);
    const caps = Buffer.from('0100000200040000000000000000000000000000', 'hex'); // cap_net_bind_service, effective
    native.lsetxattr(join(low!, 'bin'), 'user.dir', Buffer.from('d1'));
    native.lsetxattr(join(low!, 'bin/ping'), 'user.note', Buffer.from('n1'));
    native.lsetxattr(join(low!, 'bin/tool'), 'user.tool', Buffer.from('t1'));
    if (isRoot) {
      native.lsetxattr(join(low!, 'bin/ping'), 'security.capability', caps);
      native.lsetxattr(join(low!, 'bin/tool'), 'trusted.overlay.origin', Buffer.from('x'));
    }
    const u = await openUnion(`${up}=rw:${low}=ro`);
    // (A write would drop security.capability, in the kernel, as it drops setuid: ping is only chmodded.)
    await u.chmod('/bin/ping', 0o750);
    await u.appendFile('/bin/tool', '!');
    await u.writeFile('/bin/new', 'n');
    const xattrs = (p: string) => Object.fromEntries(native.llistxattr(join(up!, p)).sort().map((n) => [n, native.lgetxattr(join(up!, p), n)!.toString('hex')]));
    const hex = (s: string) => Buffer.from(s).toString('hex');
    assert.deepEqual(xattrs('bin'), { 'user.dir': hex('d1') });
    assert.deepEqual(xattrs('bin/ping'), { ...(isRoot ? { 'security.capability': caps.toString('hex') } : {}), 'user.note': hex('n1') });
    assert.deepEqual(xattrs('bin/tool'), { 'user.tool': hex('t1') });
    assert.equal(await u.readFile('/bin/tool', 'utf8'), 'T!');
    assert.equal((await lstat(join(up!, 'bin/ping'))).mode & 0o777, 0o750);
  });
});
