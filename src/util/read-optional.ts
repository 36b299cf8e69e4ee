import { readFileSync } from 'node:fs';
import { isErrno } from '../errors.js';

/**
 * A small metadata file's trimmed content, or null when it does not exist. Synchronous: such reads sit on
 * hot paths (container create), where the threadpool round trip would cost ~10x the read.
 */
export function readOptionalSync(path: string): string | null {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (e) {
    if (isErrno(e, 'ENOENT')) return null;
    throw e;
  }
}
