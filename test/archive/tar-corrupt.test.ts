import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { readTar, type TarReadOptions } from '../../src/archive/tar/tar-reader.js';
import { isStrataError, type ErrorCode } from '../../src/errors.js';

let tmp = '';
let archive: Buffer; // GNU tar: "one" (1000 bytes), "two" (3 bytes), then end blocks

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'strata-tar-corrupt-'));
  const src = join(tmp, 'src');
  mkdirSync(src);
  writeFileSync(join(src, 'one'), Buffer.alloc(1000, 1));
  writeFileSync(join(src, 'two'), 'two');
  execFileSync('tar', ['--format=ustar', '-cf', join(tmp, 'a.tar'), '-C', src, 'one', 'two']);
  archive = readFileSync(join(tmp, 'a.tar'));
});
after(() => rmSync(tmp, { recursive: true, force: true }));

/** A header block built by hand (independently of our writer), checksum fixed up. */
function block(fields: { name?: string; size?: string | Buffer; type?: string; mode?: string }): Buffer {
  const b = Buffer.alloc(512);
  b.write(fields.name ?? 'x', 0);
  b.write(fields.mode ?? '0000644\0', 100, 'latin1');
  b.write('0000000\0', 108, 'latin1');
  b.write('0000000\0', 116, 'latin1');
  if (Buffer.isBuffer(fields.size)) fields.size.copy(b, 124);
  else b.write(fields.size ?? '00000000000\0', 124, 'latin1');
  b.write('00000000000\0', 136, 'latin1');
  b.write(fields.type ?? '0', 156, 'latin1');
  b.write('ustar\x0000', 257, 'latin1');
  return fixChecksum(b);
}

function fixChecksum(b: Buffer): Buffer {
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += b[i];
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return b;
}

const pad = (b: Buffer) => Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)]);
const END = Buffer.alloc(1024);

async function drain(source: AsyncIterable<Buffer> | Iterable<Buffer>, opts?: TarReadOptions, consume = true): Promise<number> {
  let n = 0;
  for await (const e of readTar(source, opts)) {
    n++;
    if (consume) for await (const _ of e.body()) void _;
  }
  return n;
}

async function rejectsWith(p: Promise<unknown>, code: ErrorCode, message: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(isStrataError(e, code), `expected ${code}, got ${String(e)}`);
    assert.match((e as Error).message, message);
    return true;
  });
}

test('the untouched archive reads fine (baseline for the corruptions below)', async () => {
  assert.equal(await drain([archive]), 2);
});

test('a bad checksum is ErrCorrupt naming the entry offset', async () => {
  const bad = Buffer.from(archive);
  const second = 512 + 1024; // header, 1000-byte body padded to 1024
  bad[second + 1] ^= 0x01;
  await rejectsWith(drain([bad]), 'ErrCorrupt', new RegExp(`checksum mismatch at offset ${second}\\b`));
});

test('truncation mid-body, mid-header, mid-padding and mid-extension-header is "truncated tar archive"', async () => {
  const cuts = [512 + 500, 512 + 1024 + 300, 512 + 1010, 511];
  for (const cut of cuts) {
    for (const consume of [true, false]) {
      await rejectsWith(drain([archive.subarray(0, cut)], undefined, consume), 'ErrCorrupt', /^truncated tar archive$/);
    }
  }
  const pax = Buffer.concat([block({ type: 'x', size: '00000000100\0' }), Buffer.from('30 path=abc\n')]);
  await rejectsWith(drain([pax]), 'ErrCorrupt', /^truncated tar archive$/);
});

test('a huge extension header size is ErrLimit before anything is read, even from an endless source', async () => {
  async function* endless(head: Buffer): AsyncGenerator<Buffer> {
    yield head;
    for (;;) yield Buffer.alloc(1 << 16);
  }
  for (const type of ['x', 'g', 'L', 'K']) {
    await rejectsWith(drain(endless(block({ type, size: '77777777777\0' }))), 'ErrLimit', /exceed/);
  }
  // Many small extension headers add up.
  const one = Buffer.concat([block({ type: 'x', size: '00000001750\0' }), pad(Buffer.from('1000 comment=' + 'c'.repeat(986) + '\n'))]);
  await rejectsWith(drain([Buffer.concat(Array(20).fill(one))], { limits: { maxHeaderBytes: 16384 } }), 'ErrLimit', /exceed 16384 bytes/);
});

test('malformed PAX records and values are ErrCorrupt', async () => {
  const records = ['99 path=x\n', '6 a=b\n'.replace('6', '7'), '12 path=abc', 'x path=abc\n', '9 =value\n', '13 size=12a4\n', '15 mtime=1.2.3\n', '12 uid=1e10\n'];
  for (const r of records) {
    const data = Buffer.from(r);
    const size = data.length.toString(8).padStart(11, '0') + '\0';
    const tar = Buffer.concat([block({ type: 'x', size }), pad(data), block({ name: 'f' }), END]);
    await rejectsWith(drain([tar]), 'ErrCorrupt', /PAX/);
  }
});

test('negative, non-numeric and misplaced sizes are ErrCorrupt', async () => {
  const negative = Buffer.alloc(12, 0xff); // base-256 -1
  await rejectsWith(drain([Buffer.concat([block({ size: negative }), END])]), 'ErrCorrupt', /negative size/);
  await rejectsWith(drain([Buffer.concat([block({ size: '0000000x000\0' }), END])]), 'ErrCorrupt', /invalid size field/);
  await rejectsWith(drain([Buffer.concat([block({ type: '5', size: '00000001000\0' }), Buffer.alloc(512), END])]), 'ErrCorrupt', /directory entry .* has a body/);
  const huge = Buffer.from([0x80, 0, 0, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  await rejectsWith(drain([Buffer.concat([block({ size: huge }), END])]), 'ErrCorrupt', /out of range/);
});

test('unknown entry types are refused clearly', async () => {
  await rejectsWith(drain([Buffer.concat([block({ type: 'Z' }), END])]), 'ErrCorrupt', /unknown tar entry type "Z" at offset 0/);
  await rejectsWith(drain([Buffer.concat([block({ type: 'S' }), END])]), 'ErrUnsupported', /sparse/);
  const sparsePax = Buffer.from('22 GNU.sparse.major=1\n');
  await rejectsWith(drain([Buffer.concat([block({ type: 'x', size: '00000000026\0' }), pad(sparsePax), block({}), END])]), 'ErrUnsupported', /sparse/);
});

test('a lone zero block followed by a header is ErrCorrupt; an extension header without its entry too', async () => {
  const lone = Buffer.concat([archive.subarray(0, 512 + 1024), Buffer.alloc(512), archive.subarray(512 + 1024)]);
  await rejectsWith(drain([lone]), 'ErrCorrupt', /lone zero block at offset 1536/);
  const orphan = Buffer.concat([block({ type: 'x', size: '00000000013\0' }), pad(Buffer.from('11 path=ab\n')), END]);
  await rejectsWith(drain([orphan]), 'ErrCorrupt', /extension header without an entry/);
});

test('limits on entries, names and trailer', async () => {
  await rejectsWith(drain([archive], { limits: { maxEntries: 1 } }), 'ErrLimit', /more than 1 entries/);
  const longName = Buffer.from('n'.repeat(5000));
  const gnu = Buffer.concat([block({ name: '././@LongLink', type: 'L', size: longName.length.toString(8).padStart(11, '0') + '\0' }), pad(longName), block({}), END]);
  assert.equal(await drain([gnu]), 1);
  await rejectsWith(drain([gnu], { limits: { maxNameLength: 4096 } }), 'ErrLimit', /longer than 4096/);
  const junk = Buffer.concat([archive, Buffer.alloc(64 * 1024, 7)]);
  let trailer: Buffer = Buffer.alloc(0);
  assert.equal(await drain([junk], { onTrailer: (b) => (trailer = b) }), 2);
  assert.ok(trailer.equals(junk.subarray(512 + 1024 + 512 + 3))); // from the end of the last body
  await rejectsWith(drain([junk], { onTrailer: () => {}, limits: { maxTrailerBytes: 32 * 1024 } }), 'ErrLimit', /trailer/);
});

test('a NUL inside a PAX path is refused', async () => {
  const data = Buffer.from('14 path=a\0b/c\n');
  await rejectsWith(drain([Buffer.concat([block({ type: 'x', size: '00000000016\0' }), pad(data), block({}), END])]), 'ErrCorrupt', /NUL/);
});
