/**
 * One error hierarchy for the whole engine. Every failure a user can see carries a stable code;
 * the CLI maps it to an exit code and the API to an HTTP status, here and nowhere else.
 */
export type ErrorCode =
  | 'ErrNotFound'
  | 'ErrConflict'
  | 'ErrInvalidArgument'
  | 'ErrDigestMismatch'
  | 'ErrSizeMismatch'
  | 'ErrUnsupported'
  | 'ErrCapability'
  | 'ErrLimit'
  | 'ErrCorrupt'
  | 'ErrInUse'
  | 'ErrUnauthorized'
  | 'ErrForbidden'
  | 'ErrUnavailable'
  | 'ErrInternal';

const table: Record<ErrorCode, { exit: number; http: number }> = {
  ErrInvalidArgument: { exit: 2, http: 400 },
  ErrCorrupt: { exit: 3, http: 400 },
  ErrDigestMismatch: { exit: 3, http: 400 },
  ErrSizeMismatch: { exit: 3, http: 400 },
  ErrLimit: { exit: 3, http: 400 },
  ErrUnsupported: { exit: 4, http: 400 },
  ErrNotFound: { exit: 5, http: 404 },
  ErrConflict: { exit: 6, http: 409 },
  ErrInUse: { exit: 6, http: 409 },
  ErrCapability: { exit: 7, http: 501 },
  ErrUnauthorized: { exit: 8, http: 401 },
  ErrForbidden: { exit: 8, http: 403 },
  ErrUnavailable: { exit: 9, http: 503 },
  ErrInternal: { exit: 1, http: 500 },
};

export class StrataError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = code;
  }
  get exitCode(): number {
    return table[this.code].exit;
  }
  get httpStatus(): number {
    return table[this.code].http;
  }
}

export const notFound = (msg: string, cause?: unknown) => new StrataError('ErrNotFound', msg, { cause });
export const conflict = (msg: string, cause?: unknown) => new StrataError('ErrConflict', msg, { cause });
export const invalidArgument = (msg: string, cause?: unknown) => new StrataError('ErrInvalidArgument', msg, { cause });
export const digestMismatch = (msg: string) => new StrataError('ErrDigestMismatch', msg);
export const sizeMismatch = (msg: string) => new StrataError('ErrSizeMismatch', msg);
export const unsupported = (msg: string) => new StrataError('ErrUnsupported', msg);
export const capability = (msg: string, cause?: unknown) => new StrataError('ErrCapability', msg, { cause });
export const limit = (msg: string) => new StrataError('ErrLimit', msg);
export const corrupt = (msg: string, cause?: unknown) => new StrataError('ErrCorrupt', msg, { cause });
export const inUse = (msg: string) => new StrataError('ErrInUse', msg);
export const internal = (msg: string, cause?: unknown) => new StrataError('ErrInternal', msg, { cause });

export function isStrataError(e: unknown, code?: ErrorCode): e is StrataError {
  return e instanceof StrataError && (code === undefined || e.code === code);
}

/** Node system errors (ENOENT, ...) carry a string code; this narrows to them. */
export function isErrno(e: unknown, code?: string): e is NodeJS.ErrnoException {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string' && (code === undefined || (e as NodeJS.ErrnoException).code === code);
}

/** Exit code and status for anything thrown: unknown errors are internal. */
export function exitCodeOf(e: unknown): number {
  return e instanceof StrataError ? e.exitCode : 1;
}
export function httpStatusOf(e: unknown): number {
  return e instanceof StrataError ? e.httpStatus : 500;
}
