import { createRequire } from 'node:module';
import { PassThrough, Readable, Transform } from 'node:stream';
import zlib from 'node:zlib';
import { corrupt, isStrataError, unsupported } from '../errors.js';

export type Compression = 'none' | 'gzip' | 'zstd';

const CHUNK = 1 << 20;

type Zstd = typeof import('zstd-napi');
let zstdModule: Zstd | undefined;
/** zstd-napi (its native addon and JS) is loaded at the first zstd stream: it cost every command ~20 ms to start. */
const zstd = (): Zstd => (zstdModule ??= createRequire(import.meta.url)('zstd-napi') as Zstd);

/** Recognise a stream by its first bytes (6 are enough; fewer means 'none'). xz and bzip2 are named and refused. */
export function detectCompression(head: Buffer): Compression {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return 'gzip';
  if (head.length >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  if (head.length >= 6 && head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) {
    throw unsupported('xz-compressed layers are not supported');
  }
  // "BZh" + block size digit + block magic (pi): strict enough not to mistake a tar whose first name starts with "BZh".
  if (head.length >= 10 && head.toString('latin1', 0, 3) === 'BZh' && head.subarray(4, 10).equals(Buffer.from([0x31, 0x41, 0x59, 0x26, 0x53, 0x59]))) {
    throw unsupported('bzip2-compressed layers are not supported');
  }
  return 'none';
}

/** Errors of a source stream forwarded into a codec stream: they keep their identity. */
const forwarded = new WeakSet<Error>();

/** Map a codec's own error (zlib's Z_* codes, zstd's messages) to ErrCorrupt; errors from elsewhere pass unchanged. */
function corruptOnError<T extends Transform>(t: T, what: string): T {
  const destroy = t.destroy.bind(t);
  t.destroy = (err?: Error) => {
    if (err && !isStrataError(err) && !forwarded.has(err)) {
      err = corrupt(`corrupt ${what} data: ${err.message}`, err);
    }
    return destroy(err);
  };
  return t;
}

export function decompressStream(c: Compression): Transform {
  switch (c) {
    case 'none':
      return new PassThrough({ highWaterMark: CHUNK });
    case 'gzip':
      return corruptOnError(zlib.createGunzip({ chunkSize: CHUNK }), 'gzip');
    case 'zstd':
      return corruptOnError(new (zstd().DecompressStream)(), 'zstd');
  }
}

/** level: gzip 1-9 (default 6), zstd 1-19 (default 3). */
export function compressStream(c: Compression, level?: number): Transform {
  switch (c) {
    case 'none':
      return new PassThrough({ highWaterMark: CHUNK });
    case 'gzip':
      return zlib.createGzip({ chunkSize: CHUNK, level: level ?? 6 });
    case 'zstd':
      return new (zstd().CompressStream)({ compressionLevel: level ?? 3 });
  }
}

/** Read at least n bytes (or up to the end) from a paused stream, then put them back. */
function peek(source: Readable, n: number): Promise<{ head: Buffer; ended: boolean }> {
  return new Promise((resolve, reject) => {
    const parts: Buffer[] = [];
    let len = 0;
    const finish = (ended: boolean, err?: unknown) => {
      source.off('readable', onReadable);
      source.off('end', onEnd);
      source.off('error', onError);
      if (err) return reject(err);
      const head = Buffer.concat(parts);
      if (!ended && head.length > 0) source.unshift(head);
      resolve({ head, ended });
    };
    const onReadable = () => {
      let c: Buffer | null;
      while (len < n && (c = source.read() as Buffer | null) !== null) {
        parts.push(c);
        len += c.length;
      }
      if (len >= n) finish(false);
    };
    const onEnd = () => finish(true);
    const onError = (e: unknown) => finish(false, e);
    source.on('readable', onReadable);
    source.on('end', onEnd);
    source.on('error', onError);
  });
}

/** Peek the first bytes of a stream and return the uncompressed stream (the source itself for 'none'). */
export async function decompress(source: Readable): Promise<{ compression: Compression; stream: Readable }> {
  const { head, ended } = await peek(source, 10);
  const compression = detectCompression(head);
  const input = ended ? Readable.from(head.length ? [head] : []) : source;
  if (compression === 'none') return { compression, stream: input };
  const out = decompressStream(compression);
  input.on('error', (e: Error) => {
    forwarded.add(e);
    out.destroy(e);
  });
  input.pipe(out);
  return { compression, stream: out };
}

/** Layer media types (OCI and Docker, distributable or not) and how their blobs are compressed. */
export const layerMediaTypes: Readonly<Record<string, Compression>> = {
  'application/vnd.oci.image.layer.v1.tar': 'none',
  'application/vnd.oci.image.layer.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.v1.tar+zstd': 'zstd',
  'application/vnd.oci.image.layer.nondistributable.v1.tar': 'none',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip': 'gzip',
  'application/vnd.oci.image.layer.nondistributable.v1.tar+zstd': 'zstd',
  'application/vnd.docker.image.rootfs.diff.tar': 'none',
  'application/vnd.docker.image.rootfs.diff.tar.gzip': 'gzip',
  'application/vnd.docker.image.rootfs.diff.tar.zstd': 'zstd',
  'application/vnd.docker.image.rootfs.foreign.diff.tar': 'none',
  'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip': 'gzip',
};

export function mediaTypeCompression(mediaType: string): Compression {
  const c = Object.hasOwn(layerMediaTypes, mediaType) ? layerMediaTypes[mediaType] : undefined;
  if (c === undefined) throw unsupported(`unsupported layer media type ${JSON.stringify(mediaType)}`);
  return c;
}

/** The media type to give a layer we write: OCI or Docker schema 2 (Docker has no uncompressed distributable type besides `.tar`). */
export function layerMediaType(schema: 'oci' | 'docker', c: Compression): string {
  if (schema === 'oci') return c === 'none' ? 'application/vnd.oci.image.layer.v1.tar' : `application/vnd.oci.image.layer.v1.tar+${c}`;
  return c === 'none' ? 'application/vnd.docker.image.rootfs.diff.tar' : `application/vnd.docker.image.rootfs.diff.tar.${c}`;
}
