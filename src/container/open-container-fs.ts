import type { Stores } from '../stores.js';
import { conflict, isStrataError } from '../errors.js';
import { openUnion } from '../union/open-union.js';
import type { UnionFs } from '../union/union-fs.js';
import { fsError } from '../union/fs-error.js';

/**
 * A container's whole filesystem as its read-write layer sees it (image, init layer and the container's
 * own changes), with the UnionFs (node:fs/promises) surface; paths are absolute inside the container.
 * Volumes and binds are not part of it: they are mounts of a running container, not of its layer.
 */
export type ContainerFs = UnionFs & {
  /** Release it (the mount, when one was needed); afterwards every call fails with EBADF. Idempotent. */
  close(): Promise<void>;
};

/** Filesystems open in this process, per engine and container id: `rm` refuses while one is open, `rm -f` closes them. */
const opened = new WeakMap<Stores, Map<string, Set<ContainerFs>>>();

function openedIn(s: Stores): Map<string, Set<ContainerFs>> {
  let m = opened.get(s);
  if (m === undefined) opened.set(s, (m = new Map()));
  return m;
}

/** Calls that return a stream, not a promise: after close they throw instead of rejecting. */
const STREAMS = new Set<PropertyKey>(['createReadStream', 'createWriteStream']);

/**
 * The container's filesystem: through the driver's openFs when it has one (no mount, no root), else its
 * mount (driver.get, reference counted, released by close) as a one-branch union. Read-only for a
 * container with a read-only root filesystem, as `cp` into it is refused.
 */
export async function openContainerFs(s: Stores, idOrName: string): Promise<ContainerFs> {
  const c = await s.containers.resolve(idOrName);
  const { mountID } = await s.layers.getMount(c.ID);
  const readOnly = c.HostConfig?.ReadonlyRootfs ?? false;
  let union: UnionFs;
  let release = async () => {};
  if (s.driver.openFs) {
    union = await s.driver.openFs(mountID);
    if (readOnly) union = await openUnion(union.branches.map((b, i) => (i === 0 ? { ...b, mode: 'ro' as const } : b)));
  } else {
    const root = await s.driver.get(mountID);
    release = async () => {
      try {
        await s.driver.put(mountID);
      } catch (e) {
        // The container was removed meanwhile: its mount went with it.
        if (!isStrataError(e, 'ErrNotFound')) throw e;
      }
    };
    try {
      union = await openUnion([{ path: root, mode: readOnly ? 'ro' : 'rw' }]);
    } catch (e) {
      await release();
      throw e;
    }
  }

  const open = openedIn(s);
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    const set = open.get(c.ID);
    set?.delete(fs);
    if (set?.size === 0) open.delete(c.ID);
    await release();
  };
  const fs = new Proxy(union, {
    get(target, prop) {
      if (prop === 'close') return close;
      const v: unknown = Reflect.get(target, prop, target);
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        if (!closed) return (v as (...a: unknown[]) => unknown).apply(target, args);
        const e = fsError('EBADF', String(prop), typeof args[0] === 'string' ? args[0] : '/');
        if (STREAMS.has(prop)) throw e;
        return Promise.reject(e);
      };
    },
  }) as ContainerFs;
  if (!open.has(c.ID)) open.set(c.ID, new Set());
  open.get(c.ID)!.add(fs);
  return fs;
}

/** `rm` without force refuses a container whose filesystem is open here; with force it closes them first. */
export async function closeContainerFsForRemoval(s: Stores, id: string, name: string, force: boolean): Promise<void> {
  const set = opened.get(s)?.get(id);
  if (set === undefined) return;
  if (!force) throw conflict(`cannot remove container "${name}": its filesystem is open (containerFs); close it first or force remove`);
  for (const fs of [...set]) await fs.close();
}

/** Close every container filesystem opened through these stores (the engine is closing). */
export async function closeAllContainerFs(s: Stores): Promise<void> {
  for (const set of [...openedIn(s).values()]) for (const fs of [...set]) await fs.close();
}
