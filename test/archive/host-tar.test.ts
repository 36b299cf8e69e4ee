import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { hostTar, type HostEntry } from '../../src/archive/host-tar.js';
import { writeTar } from '../../src/archive/tar/tar-writer.js';
import { isStrataError } from '../../src/errors.js';
import { collect } from './apply-fixtures.js';
import { hdr } from './tar-fixture.js';

const header = (name: string, type: 'file' | 'directory', size = 0) => hdr({ name, type, size });

describe('hostTar', () => {
  let tmp: string;
  before(() => {
    tmp = mkdtempSync(join(tmpdir(), 'strata-hosttar-'));
  });
  after(() => rmSync(tmp, { recursive: true, force: true }));

  it('writes the same bytes as the tar writer: batches of small files, big files streamed between them, padding and the end', async () => {
    const entries: HostEntry[] = [{ header: header('d/', 'directory') }];
    for (let i = 0; i < 300; i++) {
      // Big files (over 1 MiB) in the middle of batches and one last; empty files; sizes off the block size.
      const size = i % 97 === 5 ? (1 << 20) + 1 + i : i % 50 === 0 ? 0 : 1 + ((i * 7919) % 9000);
      const path = join(tmp, `f${i}`);
      writeFileSync(path, Buffer.alloc(size, i));
      entries.push(size === 0 ? { header: header(`d/f${i}`, 'file') } : { header: header(`d/f${i}`, 'file', size), host: path });
    }
    entries.push({ header: header('d/last-big', 'file', (2 << 20) + 3), host: join(tmp, 'last-big') });
    writeFileSync(join(tmp, 'last-big'), Buffer.alloc((2 << 20) + 3, 9));
    const got = await collect(hostTar(entries[Symbol.iterator]()));
    const want = await collect(writeTar(entries.map((e) => ({ header: e.header, ...(e.host ? { body: readFileSync(e.host) } : {}) }))));
    assert.ok(got.equals(want), `hostTar wrote ${got.length} bytes, the tar writer ${want.length}`);
  });

  it('a big file that is shorter than measured, gone, or a symlink now fails the export as a change under it', async () => {
    const big = join(tmp, 'big');
    writeFileSync(big, Buffer.alloc(1 << 20, 1));
    symlinkSync(big, join(tmp, 'big-link'));
    const one = (host: string) => hostTar([{ header: header('big', 'file', (1 << 20) + 100), host }][Symbol.iterator]());
    await assert.rejects(collect(one(big)), (e) => isStrataError(e, 'ErrConflict') && /big shrank while its layer was being exported/.test(e.message));
    await assert.rejects(collect(one(join(tmp, 'gone'))), (e) => isStrataError(e, 'ErrConflict') && /gone changed while its layer was being exported/.test(e.message));
    await assert.rejects(collect(one(join(tmp, 'big-link'))), (e) => isStrataError(e, 'ErrConflict') && /big-link changed while/.test(e.message));
  });
});
