import { openSync, closeSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { native, LOCK_EX, LOCK_NB, LOCK_UN } from '../native/native.js';

/**
 * An exclusive flock on a file, so two strata processes (or a daemon and a CLI) sharing one data-root
 * serialise their metadata commits.
 */
export async function withFileLock<T>(path: string, fn: () => Promise<T>): Promise<T> {
  mkdirSync(dirname(path), { recursive: true });
  const fd = openSync(path, 'a', 0o600);
  try {
    return await withFdLock(fd, fn);
  } finally {
    closeSync(fd);
  }
}

/** Hold an exclusive flock on an open fd while fn runs. Polls with LOCK_NB: a blocking flock would stall Node's event loop. */
export async function withFdLock<T>(fd: number, fn: () => Promise<T>): Promise<T> {
  let delay = 1;
  while (!native.flock(fd, LOCK_EX | LOCK_NB)) {
    await sleep(delay);
    delay = Math.min(delay * 2, 50);
  }
  try {
    return await fn();
  } finally {
    native.flock(fd, LOCK_UN);
  }
}
