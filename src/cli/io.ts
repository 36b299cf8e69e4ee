import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { invalidArgument } from '../errors.js';
import { tempSibling } from '../util/atomic.js';

/** `-i FILE` or stdin ('-' or none); refuses a terminal as input, like docker. */
export function inputStream(path: string | undefined, what: string): Readable {
  if (path !== undefined && path !== '-') return createReadStream(path, { highWaterMark: 1 << 20 });
  if (process.stdin.isTTY) throw invalidArgument(`requested load from stdin, but stdin is empty: give ${what} with -i or a pipe`);
  return process.stdin;
}

/** Write a stream to `-o FILE` (atomically: temp then rename) or to stdout, which must not be a terminal. */
export async function outputStream(stream: Readable, path: string | undefined): Promise<void> {
  if (path === undefined || path === '-') {
    if (process.stdout.isTTY) throw invalidArgument('refusing to write a tar archive to a terminal: use -o FILE or redirect stdout');
    await pipeline(stream, process.stdout);
    return;
  }
  const tmp = tempSibling(path);
  try {
    await pipeline(stream, createWriteStream(tmp, { flags: 'wx' }));
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
}

export function printJSON(v: unknown): void {
  process.stdout.write(JSON.stringify(v, null, 4) + '\n');
}

/** Docker's short id: 12 hex characters, without the algorithm. */
export function shortId(id: string, noTrunc = false): string {
  return noTrunc ? id : id.replace(/^sha256:/, '').slice(0, 12);
}

/**
 * Run `fn` on each argument like docker's multi-argument commands (rm, rmi): go on after a failure,
 * report every failure, and fail at the end (the last failure is thrown, the others printed).
 */
export async function eachReporting<T>(items: readonly T[], fn: (item: T) => Promise<void>): Promise<void> {
  const failures: unknown[] = [];
  for (const item of items) {
    try {
      await fn(item);
    } catch (err) {
      failures.push(err);
    }
  }
  for (const f of failures.slice(0, -1)) process.stderr.write(`Error: ${(f as Error).message}\n`);
  if (failures.length > 0) throw failures.at(-1);
}
