import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { readTar } from '../../src/archive/tar/tar-reader.js';
import type { TarHeader } from '../../src/archive/tar/tar-header.js';
import { requireCap, isRoot } from '../helpers/caps.js';
import { makeTree, gnuTar, pythonDump, assertSameAsPython, LONG_PATH, LONG_TARGET, XATTR_BIN, SUBSEC } from './tar-fixture.js';

let tmp = '';
const archives: Record<string, string> = {};

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'strata-tar-reader-'));
  if (!isRoot) return;
  const root = join(tmp, 'root');
  mkdirSync(root);
  makeTree(root);
  for (const f of ['pax', 'gnu'] as const) gnuTar(root, (archives[f] = join(tmp, `${f}.tar`)), f);
  // ustar can hold neither the big ids nor the old mtime: archive the 200-character path only (prefix/name split).
  execFileSync('tar', ['--format=ustar', '-cf', (archives.ustar = join(tmp, 'ustar.tar')), '-C', root, LONG_PATH]);
  const v7 = join(tmp, 'v7');
  mkdirSync(join(v7, 'dir'), { recursive: true });
  writeFileSync(join(v7, 'dir', 'file'), 'v7 body');
  execFileSync('tar', ['--format=v7', '-cf', (archives.v7 = join(tmp, 'v7.tar')), '-C', v7, 'dir']);
});
after(() => rmSync(tmp, { recursive: true, force: true }));

/** Feed a file in chunks of pseudo-random sizes (seeded) so headers and bodies straddle chunk boundaries. */
async function* chunked(bytes: Buffer, maxChunk: number, seed = 1): AsyncGenerator<Buffer> {
  let s = seed;
  for (let i = 0; i < bytes.length; ) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const n = 1 + ((s >>> 8) % maxChunk);
    yield bytes.subarray(i, i + n);
    i += n;
  }
}

interface Read {
  header: TarHeader;
  headerBytes: Buffer;
  body: Buffer;
}

async function readAll(source: AsyncIterable<Buffer>, consume = true): Promise<{ entries: Read[]; trailer: Buffer }> {
  const entries: Read[] = [];
  let trailer: Buffer = Buffer.alloc(0);
  for await (const e of readTar(source, { onTrailer: (b) => (trailer = b) })) {
    const parts: Buffer[] = [];
    if (consume) for await (const c of e.body()) parts.push(Buffer.from(c));
    entries.push({ header: e.header, headerBytes: e.headerBytes, body: Buffer.concat(parts) });
  }
  return { entries, trailer };
}

const byName = (entries: Read[], name: string) => {
  const e = entries.find((x) => x.header.name === name);
  assert.ok(e, `entry ${name} missing`);
  return e;
};

for (const format of ['pax', 'gnu'] as const) {
  test(`reads a GNU tar --format=${format} archive exactly as Python tarfile does`, async (t) => {
    if (!requireCap(t, 'root (mknod, chown, trusted xattrs)', isRoot)) return;
    const bytes = readFileSync(archives[format]);
    const { entries } = await readAll(chunked(bytes, 1 << 20));
    const py = pythonDump(archives[format]);
    assert.equal(entries.length, py.length);
    entries.forEach((e, i) => assertSameAsPython(e.header, py[i]));

    // And against what the tree holds, independently of Python.
    const root = join(tmp, 'root');
    const hello = ['./hard', './hello.txt'].map((n) => byName(entries, n));
    assert.deepEqual(hello.map((e) => e.header.type).sort(), ['file', 'hardlink']);
    assert.equal(hello.find((e) => e.header.type === 'file')!.body.toString(), 'hello\n');
    assert.equal(hello.find((e) => e.header.type === 'hardlink')!.header.linkname, './hard');
    assert.equal(byName(entries, './empty').header.size, 0);
    const big = byName(entries, './big.bin');
    assert.equal(createHash('sha256').update(big.body).digest('hex'), createHash('sha256').update(readFileSync(join(root, 'big.bin'))).digest('hex'));
    assert.equal(byName(entries, './' + LONG_PATH).body.toString(), 'long\n');
    assert.equal(byName(entries, './longlink').header.linkname, LONG_TARGET);
    assert.equal(byName(entries, './longlink').header.type, 'symlink');
    assert.deepEqual([byName(entries, './link').header.type, byName(entries, './link').header.linkname], ['symlink', 'hello.txt']);
    const dev = byName(entries, './null').header;
    assert.deepEqual([dev.type, dev.devmajor, dev.devminor], ['char', 1, 3]);
    const blk = byName(entries, './loop0').header;
    assert.deepEqual([blk.type, blk.devmajor, blk.devminor], ['block', 7, 0]);
    assert.equal(byName(entries, './fifo').header.type, 'fifo');
    assert.equal(byName(entries, './setuid').header.mode, 0o4755);
    assert.deepEqual([byName(entries, './setgid/').header.type, byName(entries, './setgid/').header.mode], ['directory', 0o2750]);
    assert.equal(byName(entries, './sticky/').header.mode, 0o1777);
    assert.deepEqual([byName(entries, './owned').header.uid, byName(entries, './owned').header.gid], [1234567, 1234567]);
    assert.deepEqual([byName(entries, './bigid').header.uid, byName(entries, './bigid').header.gid], [4000000, 4000001]);
    assert.equal(byName(entries, './old').header.mtime.sec, -315619200);
    assert.equal(byName(entries, './.wh.foo').header.type, 'file');
    assert.equal(byName(entries, './opaque/.wh..wh..opq').header.type, 'file');
    assert.equal(byName(entries, './héllo-ü.txt').body.toString(), 'utf8 name');
    if (format === 'pax') {
      assert.deepEqual(byName(entries, './subsec').header.mtime, { sec: SUBSEC.sec, nsec: SUBSEC.nsec });
      const x = byName(entries, './xattr').header.xattrs;
      assert.deepEqual(x.get('user.bin'), XATTR_BIN);
      assert.deepEqual(x.get('user.text'), Buffer.from('plain'));
      assert.deepEqual(byName(entries, './opaque/').header.xattrs.get('trusted.overlay.opaque'), Buffer.from('y'));
    } else {
      // Make sure the GNU extensions are really exercised: long-name/long-link headers and base-256 ids.
      const all = Buffer.concat(entries.map((e) => e.headerBytes));
      assert.ok(all.includes('././@LongLink'));
      const idHeader = byName(entries, './bigid').headerBytes.subarray(-512);
      assert.equal(idHeader[108], 0x80);
      assert.equal(byName(entries, './old').headerBytes.subarray(-512)[136], 0xff);
    }
  });

  test(`${format}: headerBytes + bodies + trailer reproduce the archive byte for byte, whatever the chunking`, async (t) => {
    if (!requireCap(t, 'root', isRoot)) return;
    const bytes = readFileSync(archives[format]);
    const reference = await readAll(chunked(bytes, 1 << 20));
    for (const [max, seed] of [[1 << 20, 3], [1500, 7], [513, 11], [64, 5]]) {
      const { entries, trailer } = await readAll(chunked(bytes, max, seed));
      const again = Buffer.concat([...entries.flatMap((e) => [e.headerBytes, e.body]), trailer]);
      assert.ok(again.equals(bytes), `chunks up to ${max}`);
      assert.deepEqual(entries.map((e) => e.header), reference.entries.map((e) => e.header));
    }
  });
}

test('skips bodies that are not consumed', async (t) => {
  if (!requireCap(t, 'root', isRoot)) return;
  const bytes = readFileSync(archives.pax);
  const full = await readAll(chunked(bytes, 4096));
  const skipped = await readAll(chunked(bytes, 4096), false);
  assert.deepEqual(skipped.entries.map((e) => e.header), full.entries.map((e) => e.header));
  assert.deepEqual(skipped.trailer, full.trailer);
});

test('a body iterated after moving to the next entry is an error, not silent garbage', async (t) => {
  if (!requireCap(t, 'root', isRoot)) return;
  const bytes = readFileSync(archives.pax);
  let stale: TarHeader | undefined;
  let staleBody: AsyncIterable<Buffer> | undefined;
  for await (const e of readTar(chunked(bytes, 1 << 16))) {
    if (staleBody) {
      await assert.rejects(async () => {
        for await (const _ of staleBody!) void _;
      }, /after moving to the next entry/);
      break;
    }
    if (e.header.name === './big.bin') {
      stale = e.header;
      staleBody = e.body();
    }
  }
  assert.ok(stale);
});

test('ustar prefix/name split is joined back', async (t) => {
  if (!requireCap(t, 'root', isRoot)) return;
  const { entries } = await readAll(chunked(readFileSync(archives.ustar), 1 << 20));
  const py = pythonDump(archives.ustar);
  entries.forEach((e, i) => assertSameAsPython(e.header, py[i]));
  assert.ok(entries.some((e) => e.header.name === LONG_PATH && e.body.toString() === 'long\n'));
  assert.ok(!Buffer.concat(entries.map((e) => e.headerBytes)).includes('PaxHeaders'));
});

test('old v7 archives', async (t) => {
  if (!requireCap(t, 'root', isRoot)) return;
  const bytes = readFileSync(archives.v7);
  const { entries } = await readAll(chunked(bytes, 1 << 20));
  const py = pythonDump(archives.v7);
  assert.equal(entries.length, 2);
  entries.forEach((e, i) => assertSameAsPython(e.header, py[i]));
  assert.deepEqual(entries.map((e) => [e.header.name, e.header.type, e.header.uname]), [['dir/', 'directory', ''], ['dir/file', 'file', '']]);
  assert.equal(entries[1].body.toString(), 'v7 body');
  // A v7 '\0' entry whose name ends with '/' is a directory: rewrite the typeflag and fix the checksum.
  const dir = Buffer.from(bytes.subarray(0, 512));
  dir[156] = 0;
  dir.fill(0x20, 148, 156);
  const sum = dir.reduce((a, c) => a + c, 0);
  dir.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  const rewritten = await readAll(chunked(Buffer.concat([dir, Buffer.alloc(1024)]), 1 << 20));
  assert.equal(rewritten.entries[0].header.type, 'directory');
});

test('ends cleanly on an empty input and on an archive without end blocks', async () => {
  assert.deepEqual((await readAll(chunked(Buffer.alloc(0), 10))).entries, []);
  const onlyZeros = await readAll(chunked(Buffer.alloc(10240), 1000));
  assert.deepEqual(onlyZeros.entries, []);
  assert.equal(onlyZeros.trailer.length, 10240);
});
