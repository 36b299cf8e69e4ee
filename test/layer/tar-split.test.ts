import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, truncateSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { applyLayer } from '../../src/archive/apply-layer.js';
import type { TarHeader } from '../../src/archive/tar/tar-header.js';
import { writeTar, type TarWriteEntry } from '../../src/archive/tar/tar-writer.js';
import { isStrataError } from '../../src/errors.js';
import { TarSplitWriter, tarSplitStream } from '../../src/layer/tar-split.js';
import { collect } from '../archive/apply-fixtures.js';
import { hdr } from '../archive/tar-fixture.js';

const header = (name: string, type: TarHeader['type'], size = 0, linkname = '') => hdr({ name, type, size, linkname, mode: type === 'directory' ? 0o755 : 0o644 });

/** Small files around a big one and a long name: the framing mixes batched small bodies, a streamed body and PAX headers. */
function entries(): TarWriteEntry[] {
  const out: TarWriteEntry[] = [{ header: header('d/', 'directory') }];
  for (let i = 0; i < 150; i++) {
    const body = Buffer.alloc(1 + ((i * 7919) % 5000), i);
    out.push({ header: header(`d/f${i}`, 'file', body.length), body });
    if (i === 70) {
      const big = Buffer.alloc((1 << 20) + 12345, 7);
      out.push({ header: header('d/big', 'file', big.length), body: big });
      out.push({ header: header(`d/${'long'.repeat(40)}`, 'file', 3), body: Buffer.from('abc') });
      out.push({ header: header('d/link', 'symlink', 0, 'f1') });
    }
  }
  return out;
}

describe('tar-split', () => {
  let tmp: string;
  before(() => {
    tmp = mkdtempSync(join(tmpdir(), 'strata-tarsplit-'));
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('regenerates the applied tar byte for byte (small bodies read in batches); a file that shrank on disk is ErrCorrupt', async () => {
    const tar = await collect(writeTar(entries()));
    const root = join(tmp, 'root');
    mkdirSync(root);
    const split = new TarSplitWriter(join(tmp, 'split.ndjson.gz'));
    await applyLayer(root, Readable.from([tar]), {
      whiteouts: 'overlay',
      onEntry: (e) => split.entry(e.headerBytes, e.header.name, e.header.type === 'file' ? e.header.size : 0),
      onTrailer: (b) => split.trailer(b),
    });
    await split.close();
    assert.ok((await collect(tarSplitStream(join(tmp, 'split.ndjson.gz'), root))).equals(tar));

    truncateSync(join(root, 'd/f100'), 1);
    await assert.rejects(collect(tarSplitStream(join(tmp, 'split.ndjson.gz'), root)), (e) => isStrataError(e, 'ErrCorrupt') && /d\/f100 is shorter than recorded/.test(e.message));
    unlinkSync(join(root, 'd/f3'));
    await assert.rejects(collect(tarSplitStream(join(tmp, 'split.ndjson.gz'), root)), (e: Error & { code?: string }) => e.code === 'ENOENT' && e.message.includes('d/f3'));
  });
});
