import { constants as C } from 'node:fs';
import { open } from 'node:fs/promises';

const CHUNK = 1 << 20;

/**
 * Exactly `size` bytes from the start of a regular file, in chunks of up to 1 MiB read on the thread pool (a big
 * file read synchronously holds the event loop for as long as the disk takes), never through a symlink: the
 * caller measured a regular file there. `failed` turns an open failure into the caller's error, `short` makes
 * the error for a file that ends first.
 */
export async function* readExactly(path: string, size: number, errors: { failed(e: unknown): unknown; short(): unknown }): AsyncGenerator<Buffer> {
  let fh;
  try {
    fh = await open(path, C.O_RDONLY | C.O_NOFOLLOW);
  } catch (e) {
    throw errors.failed(e);
  }
  try {
    for (let left = size; left > 0; ) {
      const buf = Buffer.allocUnsafe(Math.min(CHUNK, left));
      const { bytesRead } = await fh.read(buf, 0, buf.length, size - left);
      if (bytesRead === 0) throw errors.short();
      left -= bytesRead;
      yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
    }
  } finally {
    await fh.close();
  }
}
