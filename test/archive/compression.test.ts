import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, readFileSync, writeFileSync, createReadStream } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import {
  compressStream, decompress, decompressStream, detectCompression, mediaTypeCompression, layerMediaType, type Compression,
} from '../../src/archive/compression.js';
import { isStrataError } from '../../src/errors.js';

let tmp = '';
let plain: Buffer;
let plainFile = '';

before(() => {
  tmp = mkdtempSync(join(tmpdir(), 'strata-compression-'));
  // Compressible but not trivial: text with random runs, a few MiB so several 1 MiB chunks go through.
  const parts: Buffer[] = [];
  for (let i = 0; i < 3000; i++) parts.push(Buffer.from(`line ${i} ${'abc'.repeat(i % 50)}\n`), randomBytes(1000));
  plain = Buffer.concat(parts);
  plainFile = join(tmp, 'plain');
  writeFileSync(plainFile, plain);
});
after(() => rmSync(tmp, { recursive: true, force: true }));

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const cli = (cmd: string, args: string[], input?: Buffer) => execFileSync(cmd, args, { input, maxBuffer: 1 << 30 });

async function collect(s: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of s) parts.push(c);
  return Buffer.concat(parts);
}

async function inflate(bytes: Buffer | string): Promise<{ compression: Compression; out: Buffer }> {
  const source = typeof bytes === 'string' ? createReadStream(bytes, { highWaterMark: 1 << 20 }) : Readable.from([bytes]);
  const { compression, stream } = await decompress(source);
  return { compression, out: await collect(stream) };
}

async function deflate(c: Compression, level?: number): Promise<Buffer> {
  const parts: Buffer[] = [];
  await pipeline(createReadStream(plainFile), compressStream(c, level), async function* (s: AsyncIterable<Buffer>) {
    for await (const b of s) parts.push(b);
  });
  return Buffer.concat(parts);
}

test('detects gzip, zstd and plain data by magic bytes; names xz and bzip2', () => {
  assert.equal(detectCompression(cli('gzip', ['-c'], Buffer.from('x'))), 'gzip');
  assert.equal(detectCompression(cli('zstd', ['-c'], Buffer.from('x'))), 'zstd');
  assert.equal(detectCompression(Buffer.from('hello world, a tar header would start with a name')), 'none');
  assert.equal(detectCompression(Buffer.alloc(0)), 'none');
  assert.equal(detectCompression(Buffer.from([0x1f])), 'none');
  assert.throws(() => detectCompression(cli('xz', ['-c'], Buffer.from('x'))), (e: unknown) => isStrataError(e, 'ErrUnsupported'));
  assert.throws(() => detectCompression(cli('bzip2', ['-c'], Buffer.from('x'))), (e: unknown) => isStrataError(e, 'ErrUnsupported'));
  assert.equal(detectCompression(Buffer.from('BZh9 is the name of a file, not bzip2')), 'none');
});

for (const [c, tool] of [['gzip', 'gzip'], ['zstd', 'zstd']] as const) {
  test(`${c}: CLI-compressed input decompresses to the same bytes`, async () => {
    const file = join(tmp, `cli.${c}`);
    writeFileSync(file, cli(tool, ['-c', plainFile]));
    const { compression, out } = await inflate(file);
    assert.equal(compression, c);
    assert.equal(sha(out), sha(plain));
  });

  test(`${c}: our compressed output is read back by the ${tool} CLI`, async () => {
    for (const level of [undefined, 1, 9]) {
      const packed = await deflate(c, level);
      assert.equal(detectCompression(packed), c);
      assert.ok(packed.length < plain.length);
      assert.equal(sha(cli(tool, ['-dc'], packed)), sha(plain));
    }
  });

  test(`${c}: concatenated members/frames decompress fully`, async () => {
    const half = plain.length >> 1;
    const a = cli(tool, ['-c'], plain.subarray(0, half));
    const b = cli(tool, ['-c'], plain.subarray(half));
    const { out } = await inflate(Buffer.concat([a, b]));
    assert.equal(sha(out), sha(plain));
  });

  test(`${c}: corrupt and truncated input is ErrCorrupt`, async () => {
    const packed = cli(tool, ['-c', plainFile]);
    const flipped = Buffer.from(packed);
    for (let i = 100; i < 200; i++) flipped[i] ^= 0x5a;
    const truncated = packed.subarray(0, packed.length >> 1);
    for (const bad of [flipped, truncated]) {
      await assert.rejects(inflate(bad), (e: unknown) => {
        assert.ok(isStrataError(e, 'ErrCorrupt'), String(e));
        assert.match((e as Error).message, new RegExp(`^corrupt ${c} data: `));
        return true;
      });
    }
  });
}

test('pigz output decompresses fully', async () => {
  const packed = cli('pigz', ['-c', '-b', '128', '-p', '2', plainFile]);
  assert.equal(sha((await inflate(packed)).out), sha(plain));
});

test("'none' passes the source through, short inputs included", async () => {
  const big = await inflate(plainFile);
  assert.equal(big.compression, 'none');
  assert.equal(sha(big.out), sha(plain));
  for (const small of [Buffer.alloc(0), Buffer.from('abc')]) {
    const r = await inflate(small);
    assert.deepEqual([r.compression, r.out], ['none', small]);
  }
  assert.equal(sha(await collect(Readable.from([plain]).pipe(decompressStream('none')))), sha(plain));
  assert.equal(sha(await collect(Readable.from([plain]).pipe(compressStream('none')))), sha(plain));
});

test('an error of the source stream reaches the consumer unchanged', async () => {
  const boom = new Error('disk on fire');
  const source = new Readable({ read() {} });
  source.push(cli('gzip', ['-c'], plain.subarray(0, 100000)).subarray(0, 5000));
  const { stream } = await decompress(source);
  setTimeout(() => source.destroy(boom), 10);
  await assert.rejects(collect(stream), (e: unknown) => e === boom);
});

test('layer media types map to their compression; unknown ones are ErrUnsupported', () => {
  const cases: [string, Compression][] = [
    ['application/vnd.oci.image.layer.v1.tar', 'none'],
    ['application/vnd.oci.image.layer.v1.tar+gzip', 'gzip'],
    ['application/vnd.oci.image.layer.v1.tar+zstd', 'zstd'],
    ['application/vnd.oci.image.layer.nondistributable.v1.tar+gzip', 'gzip'],
    ['application/vnd.docker.image.rootfs.diff.tar.gzip', 'gzip'],
    ['application/vnd.docker.image.rootfs.foreign.diff.tar.gzip', 'gzip'],
    ['application/vnd.docker.image.rootfs.diff.tar', 'none'],
  ];
  for (const [mt, c] of cases) assert.equal(mediaTypeCompression(mt), c, mt);
  for (const mt of ['application/vnd.oci.image.layer.v1.tar+bzip2', 'application/json', 'toString', '']) {
    assert.throws(() => mediaTypeCompression(mt), (e: unknown) => isStrataError(e, 'ErrUnsupported'), mt);
  }
  for (const schema of ['oci', 'docker'] as const) {
    for (const c of ['none', 'gzip', 'zstd'] as const) assert.equal(mediaTypeCompression(layerMediaType(schema, c)), c);
  }
});
