import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { Engine } from '../../src/engine.js';
import { unmountUnder } from '../fixtures/unmount.js';
import { isRoot } from './caps.js';

/** The drivers every engine-level test runs against; overlay2 needs root. */
export const ENGINE_DRIVERS = isRoot ? ['overlay2', 'vfs'] : ['vfs'];

export interface TestStore {
  root: string;
  engine: Engine;
  /** Reopen on the same data-root (a second engine, as a second process would). */
  reopen(): Promise<Engine>;
  dispose(): Promise<void>;
}

export async function openTestStore(driver: string): Promise<TestStore> {
  const root = await mkdtemp(join(tmpdir(), `strata-${driver}-`));
  const engine = await Engine.open({ dataRoot: root, storageDriver: driver });
  return {
    root,
    engine,
    reopen: () => Engine.open({ dataRoot: root, storageDriver: driver }),
    async dispose() {
      await engine.close().catch(() => undefined);
      unmountUnder(root);
      await rm(root, { recursive: true, force: true });
    },
  };
}

/**
 * Every non-directory in the data-root except lock files: what a failed operation must leave exactly
 * as it was (tmp/ and ingest scratch included, so leftovers there count too; empty directories don't).
 */
export async function storeListing(root: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(dir: string): Promise<void> {
    for (const e of await readdir(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.name.endsWith('.lock') || e.name === 'merged') continue;
      if (e.isDirectory()) await walk(p);
      else out.push(relative(root, p));
    }
  }
  await walk(root);
  return out.sort();
}

export async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c);
  return Buffer.concat(parts);
}
