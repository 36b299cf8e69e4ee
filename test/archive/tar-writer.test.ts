import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync, mkdirSync, writeFileSync, readdirSync, lstatSync, readlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { readTar } from '../../src/archive/tar/tar-reader.js';
import { writeTar, type TarWriteEntry } from '../../src/archive/tar/tar-writer.js';
import type { TarHeader } from '../../src/archive/tar/tar-header.js';
import { isStrataError } from '../../src/errors.js';
import { requireCap, isRoot } from '../helpers/caps.js';
import { makeTree, gnuTar, pythonDump, assertSameAsPython, XATTR_BIN, hdr } from './tar-fixture.js';

let tmp = '';
let root = '';
const archives: Record<string, string> = {};

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'strata-tar-writer-'));
  if (!isRoot) return;
  root = join(tmp, 'root');
  mkdirSync(root);
  makeTree(root);
  for (const f of ['pax', 'gnu'] as const) gnuTar(root, (archives[f] = join(tmp, `${f}.tar`)), f);
});
after(() => rmSync(tmp, { recursive: true, force: true }));

const fileSource = (p: string) => createReadStream(p, { highWaterMark: 1 << 20 });

async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c);
  return Buffer.concat(parts);
}

async function headersOf(bytes: Buffer): Promise<TarHeader[]> {
  const out: TarHeader[] = [];
  for await (const e of readTar([bytes])) out.push(e.header);
  return out;
}


/** Everything GNU tar restores, per path: type, mode, ids, mtime (ns), device, content, link target, hardlink group, xattrs. */
function snapshot(dir: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const inodes = new Map<bigint, string>();
  const walk = (rel: string) => {
    for (const name of readdirSync(join(dir, rel)).sort()) {
      const r = rel ? `${rel}/${name}` : name;
      const p = join(dir, r);
      const st = lstatSync(p, { bigint: true });
      const kind = st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : 'fifo';
      const first = st.isFile() ? inodes.get(st.ino) : undefined;
      if (st.isFile() && !first) inodes.set(st.ino, r);
      const xattrs = spawnSync('getfattr', ['-h', '-d', '-m', '-', '-e', 'hex', '--absolute-names', p]).stdout.toString().split('\n').slice(1).filter(Boolean).sort();
      out[r] = {
        kind, mode: Number(st.mode & 0o7777n), uid: st.uid, gid: st.gid, rdev: st.rdev,
        mtime: kind === 'dir' || kind === 'symlink' ? undefined : st.mtimeNs,
        hardlinkOf: first,
        data: st.isFile() ? createHash('sha256').update(readFileSync(p)).digest('hex') : undefined,
        target: st.isSymbolicLink() ? readlinkSync(p) : undefined,
        xattrs,
      };
      if (st.isDirectory()) walk(r);
    }
  };
  walk('');
  return out;
}

for (const format of ['pax', 'gnu'] as const) {
  test(`${format}: read then write with headerBytes and trailer reproduces the archive byte for byte (streaming)`, async (t) => {
    if (!requireCap(t, 'root', isRoot)) return;
    let trailer: Buffer | undefined;
    const entries = async function* (): AsyncGenerator<TarWriteEntry> {
      for await (const e of readTar(fileSource(archives[format]), { onTrailer: (b) => (trailer = b) })) {
        yield { header: e.header, headerBytes: e.headerBytes, body: e.body() };
      }
    };
    // The trailer is known only once the reader is done.
    const out = await collect(writeTar(entries(), { trailer: () => trailer }));
    assert.ok(out.equals(readFileSync(archives[format])));
  });

  test(`${format}: re-encoded archive reads back equal, GNU tar lists and extracts it identically, Python agrees`, async (t) => {
    if (!requireCap(t, 'root', isRoot)) return;
    const original: TarHeader[] = [];
    const entries = async function* (): AsyncGenerator<TarWriteEntry> {
      for await (const e of readTar(fileSource(archives[format]))) {
        original.push(e.header);
        yield { header: e.header, body: e.body() };
      }
    };
    const out = await collect(writeTar(entries()));
    const written = join(tmp, `ours-${format}.tar`);
    writeFileSync(written, out);

    const back = await headersOf(out);
    assert.deepEqual(back, original);
    const py = pythonDump(written);
    assert.equal(py.length, back.length);
    back.forEach((h, i) => assertSameAsPython(h, py[i]));

    const list = spawnSync('tar', ['-tvv', '--xattrs', '-f', written]);
    assert.equal(list.status, 0, list.stderr.toString());
    assert.equal(list.stderr.toString(), '');

    const dest = join(tmp, `extract-${format}`);
    mkdirSync(dest);
    execFileSync('tar', ['-x', '--xattrs', '--xattrs-include=*', '-p', '--numeric-owner', '-f', written, '-C', dest], { stdio: 'pipe' });
    const want = snapshot(root);
    const got = snapshot(dest);
    if (format === 'gnu') {
      // The GNU format has neither xattrs nor sub-second times: compare what it carries.
      for (const s of [...Object.values(want), ...Object.values(got)] as { xattrs?: unknown; mtime?: bigint }[]) {
        delete s.xattrs;
        if (s.mtime !== undefined) s.mtime = s.mtime / 1_000_000_000n;
      }
    }
    assert.deepEqual(got, want);
    if (format === 'pax') {
      const xattrs = (got['xattr'] as { xattrs: string[] }).xattrs;
      assert.ok(xattrs.includes(`user.bin=0x${XATTR_BIN.toString('hex')}`), xattrs.join(','));
      assert.ok((got['opaque'] as { xattrs: string[] }).xattrs.includes('trusted.overlay.opaque=0x79'));
    }
    // Entries that fit ustar get no PAX header (headerBytes = previous padding + one block).
    if (format === 'gnu') {
      const plain = new Set(['./hello.txt', './hard', './empty', './setuid', './null', './loop0', './link', './owned']);
      for await (const e of readTar([out])) if (plain.has(e.header.name)) assert.ok(e.headerBytes.length < 1024, e.header.name);
    }
  });
}

test('PAX is used exactly when ustar cannot hold a field', async (t) => {
  const longName = 'a/'.repeat(150) + 'end';
  const entries: TarWriteEntry[] = [
    { header: hdr({ name: 'plain', type: 'file', size: 3 }), body: Buffer.from('abc') },
    { header: hdr({ name: longName, type: 'file', size: 0 }) },
    { header: hdr({ name: 'ünïcode-名前', type: 'file', size: 0 }) },
    { header: hdr({ name: 'ids', type: 'file', uid: 5000000, gid: 2 ** 31, uname: 'u'.repeat(40), gname: 'grp' }) },
    { header: hdr({ name: 'old', type: 'file', mtime: { sec: -315619200, nsec: 0 } }) },
    { header: hdr({ name: 'frac', type: 'file', mtime: { sec: 1700000000, nsec: 500 }, atime: { sec: 1, nsec: 0 } }) },
    { header: hdr({ name: 'negfrac', type: 'file', mtime: { sec: -2, nsec: 250_000_000 } }) },
    { header: hdr({ name: 'x', type: 'file', xattrs: new Map([['user.bin', XATTR_BIN], ['security.capability', Buffer.from('0100000200200000000000000000000000000000', 'hex')]]) }) },
    { header: hdr({ name: 'comment', type: 'file', pax: new Map([['comment', Buffer.from([0xc3, 0x28, 0x0a])]]) }) },
    { header: hdr({ name: 'dir', type: 'directory', mode: 0o755 }) },
    { header: hdr({ name: 'tty', type: 'char', devmajor: 5, devminor: 0 }) },
    { header: hdr({ name: 'sda', type: 'block', devmajor: 8, devminor: 1048575 }) },
    { header: hdr({ name: 'ln', type: 'symlink', linkname: 'L'.repeat(300) }) },
    { header: hdr({ name: 'chunks', type: 'file', size: 1000 }), body: (async function* () { for (let i = 0; i < 10; i++) yield Buffer.alloc(100, i); })() },
  ];
  const expected = entries.map((e) => ({ ...e.header, name: e.header.type === 'directory' ? e.header.name + '/' : e.header.name }));
  const out = await collect(writeTar(entries));
  const read: { header: TarHeader; headerBytes: Buffer; body: Buffer }[] = [];
  for await (const e of readTar([out])) read.push({ header: e.header, headerBytes: e.headerBytes, body: await collect(e.body()) });
  assert.deepEqual(read.map((r) => r.header), expected);
  const pax = new Set(read.filter((r) => r.headerBytes.length > 512).map((r) => r.header.name));
  assert.deepEqual([...pax].sort(), [longName, 'ünïcode-名前', 'ids', 'old', 'frac', 'negfrac', 'x', 'comment', 'ln'].sort());
  assert.deepEqual(read.at(-1)!.body, Buffer.concat(Array.from({ length: 10 }, (_, i) => Buffer.alloc(100, i))));
  assert.equal(out.length % 512, 0);
  assert.ok(out.subarray(-1024).equals(Buffer.alloc(1024)));
  assert.match(out.toString('latin1'), /mtime=-1\.75\n/);

  // Python agrees with every field, binary PAX values included.
  const file = join(tmp, 'scratch.tar');
  writeFileSync(file, out);
  const py = pythonDump(file);
  read.forEach((r, i) => assertSameAsPython(r.header, py[i]));

  // GNU tar lists it without complaint and shows the devices.
  const list = spawnSync('tar', ['-tvf', file]);
  assert.equal(list.status, 0, list.stderr.toString());
  assert.equal(list.stderr.toString(), '');
  assert.match(list.stdout.toString(), /^c.* 5,0 .* tty$/m);
  assert.match(list.stdout.toString(), /^b.* 8,1048575 .* sda$/m);

  if (!requireCap(t, 'root (extract devices, security xattrs)', isRoot)) return;
  const dest = join(tmp, 'scratch');
  mkdirSync(dest);
  execFileSync('tar', ['-x', '--xattrs', '--xattrs-include=*', '-p', '--numeric-owner', '-f', file, '-C', dest], { stdio: 'pipe' });
  const tty = lstatSync(join(dest, 'tty'));
  assert.ok(tty.isCharacterDevice());
  assert.equal(tty.rdev, (5 << 8) | 0);
  const ids = lstatSync(join(dest, 'ids'));
  assert.deepEqual([ids.uid, ids.gid], [5000000, 2 ** 31]);
  assert.equal(lstatSync(join(dest, 'frac'), { bigint: true }).mtimeNs, 1700000000_000000500n);
  assert.equal(execFileSync('getfattr', ['--absolute-names', '--only-values', '-n', 'user.bin', join(dest, 'x')]).toString('hex'), XATTR_BIN.toString('hex'));
});

test('sizes beyond 8 GiB go to PAX', async () => {
  const { encodeHeader } = await import('../../src/archive/tar/tar-writer.js');
  const b = encodeHeader(hdr({ name: 'huge', type: 'file', size: 9 * 2 ** 30 }));
  assert.equal(b.length, 1536);
  assert.match(b.toString('latin1'), /\d+ size=9663676416\n/);
  assert.equal(b.toString('latin1', 1024 + 124, 1024 + 135), '00000000000');
});

test('body length must equal header.size', async () => {
  const cases: TarWriteEntry[] = [
    { header: hdr({ name: 'short', type: 'file', size: 10 }), body: Buffer.alloc(5) },
    { header: hdr({ name: 'long', type: 'file', size: 10 }), body: (async function* () { yield Buffer.alloc(8); yield Buffer.alloc(8); })() },
    { header: hdr({ name: 'none', type: 'file', size: 1 }) },
    { header: hdr({ name: 'dir', type: 'directory', size: 1 }), body: Buffer.alloc(1) },
  ];
  for (const entry of cases) {
    await assert.rejects(collect(writeTar([entry])), (e: unknown) => isStrataError(e, entry.header.type === 'directory' ? 'ErrInvalidArgument' : 'ErrSizeMismatch'), entry.header.name);
  }
  await assert.rejects(collect(writeTar([{ header: hdr({ name: 'a', type: 'file' }), headerBytes: Buffer.alloc(100) }])), (e: unknown) => isStrataError(e, 'ErrInvalidArgument'));
});

test('pieces side by side in one allocation go out as views of it, with the same bytes as separate pieces', async () => {
  const { encodeHeader } = await import('../../src/archive/tar/tar-writer.js');
  const entries = [
    ...Array.from({ length: 8 }, (_, i) => ({ header: hdr({ name: `f${i}`, type: 'file', size: 200_001 }), body: Buffer.alloc(200_001, i) })),
    { header: hdr({ name: 'd', type: 'directory' }) },
  ];
  const expected = await collect(writeTar(entries));
  // The layout a producer makes: each header after the previous body's padding, bodies in place.
  const pads = entries.map((_, i) => (i === 0 ? 0 : (512 - (entries[i - 1]!.header.size % 512)) % 512));
  const arena = Buffer.alloc(entries.reduce((n, { header, body }, i) => n + pads[i]! + encodeHeader(header).length + (body?.length ?? 0), 0));
  let off = 0;
  const laidOut: TarWriteEntry[] = entries.map(({ header, body }, i) => {
    const start = off;
    off += pads[i]! + encodeHeader(header).copy(arena, off + pads[i]!);
    const e: TarWriteEntry = { header, headerBytes: arena.subarray(start, off) };
    if (body) e.body = arena.subarray(off, (off += body.copy(arena, off)));
    return e;
  });
  const chunks: Buffer[] = [];
  for await (const c of writeTar(laidOut)) chunks.push(c as Buffer);
  assert.deepEqual(Buffer.concat(chunks), expected);
  // The first output chunk (a full 1 MiB batch) is a view of the arena, not a copy.
  assert.equal(chunks[0]!.buffer, arena.buffer);
  assert.equal(chunks[0]!.byteOffset, arena.byteOffset);
  assert.ok(chunks[0]!.length >= 1 << 20);
});

test('respects backpressure: a slow reader does not make the writer buffer the body', async () => {
  let produced = 0;
  const size = 256 * 2 ** 20;
  const body = (async function* () {
    for (let n = 0; n < size; n += 1 << 16) {
      produced += 1 << 16;
      yield Buffer.alloc(1 << 16);
    }
  })();
  const stream = writeTar([{ header: hdr({ name: 'big', type: 'file', size }), body }]);
  stream.pause();
  stream.read(0);
  await new Promise((r) => setTimeout(r, 200));
  assert.ok(produced > 0 && produced <= 4 * 2 ** 20, `produced ${produced} bytes with nobody reading`);
  let total = 0;
  for await (const c of stream) total += (c as Buffer).length;
  assert.equal(total, 512 + size + 1024);
});
