import { constants } from 'node:os';

/** Node's own wording for the codes the union raises, so messages read like node:fs errors. */
const DESCRIPTIONS: Record<string, string> = {
  ENOENT: 'no such file or directory',
  EEXIST: 'file already exists',
  ENOTDIR: 'not a directory',
  EISDIR: 'illegal operation on a directory',
  ENOTEMPTY: 'directory not empty',
  EXDEV: 'cross-device link not permitted',
  EROFS: 'read-only file system',
  ELOOP: 'too many symbolic links encountered',
  ENAMETOOLONG: 'name too long',
  EINVAL: 'invalid argument',
  EPERM: 'operation not permitted',
  EBUSY: 'resource busy or locked',
  EACCES: 'permission denied',
  EBADF: 'bad file descriptor',
  ENOTSUP: 'operation not supported on socket',
};

/** An error shaped like node:fs's (message, errno, code, syscall, path, dest). */
export interface FsError extends Error {
  errno: number;
  code: string;
  syscall: string;
  path: string;
  dest?: string;
}

const OURS = Symbol('strata.union.error');

export function fsError(code: string, syscall: string, path: string, dest?: string): FsError {
  const desc = DESCRIPTIONS[code] ?? code.toLowerCase();
  const msg = `${code}: ${desc}, ${syscall} '${path}'${dest === undefined ? '' : ` -> '${dest}'`}`;
  const errno = (constants.errno as Record<string, number>)[code] ?? 0;
  const e = new Error(msg) as FsError & { [OURS]?: true };
  e.errno = -errno;
  e.code = code;
  e.syscall = syscall;
  e.path = path;
  if (dest !== undefined) e.dest = dest;
  e[OURS] = true;
  return e;
}

/**
 * An error from a host call made for a union operation, re-issued with the union path instead of the
 * branch's host path (a caller must never learn, or depend on, where a branch lives).
 */
export function asUnionError(e: unknown, syscall: string, path: string, dest?: string): unknown {
  if (e instanceof Error && (e as { [OURS]?: true })[OURS]) return e;
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return fsError(code, syscall, path, dest);
  return e;
}
