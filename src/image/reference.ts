import { invalidArgument, unsupported } from '../errors.js';
import type { Digest } from '../util/digest.js';

/**
 * An image reference, normalised as docker does: `busybox` is domain `docker.io`, path `library/busybox`.
 * A reference parsed from text has no tag unless one was written; `withDefaultTag` adds `latest`.
 */
export interface Reference {
  readonly domain: string;
  readonly path: string;
  readonly tag?: string;
  readonly digest?: Digest;
}

export const DEFAULT_DOMAIN = 'docker.io';
export const DEFAULT_TAG = 'latest';
const LEGACY_DEFAULT_DOMAIN = 'index.docker.io';
const OFFICIAL_REPO_PREFIX = 'library/';
export const MAX_NAME_LENGTH = 255;

// The grammar of docker/distribution's reference package.
const alnum = '[a-z0-9]+';
const separator = '(?:[._]|__|[-]+)';
const pathComponent = `${alnum}(?:${separator}${alnum})*`;
const domainComponent = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const host = `(?:${domainComponent}(?:\\.${domainComponent})*|\\[[a-fA-F0-9:]+\\])`;
const PATH_RE = new RegExp(`^${pathComponent}(?:/${pathComponent})*$`);
const DOMAIN_RE = new RegExp(`^${host}(?::[0-9]+)?$`);
const TAG_RE = /^[\w][\w.-]{0,127}$/;
const ANY_DIGEST_RE = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[a-fA-F0-9]{32,}$/;
const SHA256_RE = /^sha256:[a-f0-9]{64}$/;
const HEX64_RE = /^[a-f0-9]{64}$/;

const bad = (s: string, why?: string) => invalidArgument(why ? `invalid reference format: ${why}` : `invalid reference format: ${JSON.stringify(s)}`);

/** docker's splitDockerDomain: the first component is a domain when it has '.' or ':', is `localhost`, or has capitals. */
function splitDomain(name: string): [string, string] {
  const i = name.indexOf('/');
  let domain: string;
  let rest: string;
  const first = i < 0 ? '' : name.slice(0, i);
  if (i < 0 || (!/[.:]/.test(first) && first !== 'localhost' && first.toLowerCase() === first)) {
    domain = DEFAULT_DOMAIN;
    rest = name;
  } else {
    domain = first;
    rest = name.slice(i + 1);
  }
  if (domain === LEGACY_DEFAULT_DOMAIN) domain = DEFAULT_DOMAIN;
  if (domain === DEFAULT_DOMAIN && !rest.includes('/')) rest = OFFICIAL_REPO_PREFIX + rest;
  return [domain, rest];
}

/**
 * Parse and normalise `[domain[:port]/]path[:tag][@sha256:hex]` the way docker's ParseNormalizedNamed does.
 * Errors are ErrInvalidArgument with docker's wording; digests other than sha256 are ErrUnsupported.
 */
export function parseReference(s: string): Reference {
  if (s === '') throw bad(s, 'repository name must have at least one component');
  if (HEX64_RE.test(s)) throw invalidArgument(`invalid repository name (${s}), cannot specify 64-byte hexadecimal strings`);
  let rest = s;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const d = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!ANY_DIGEST_RE.test(d)) throw bad(s);
    if (!SHA256_RE.test(d)) {
      if (d.startsWith('sha256:')) throw bad(s, `invalid digest ${JSON.stringify(d)}`);
      throw unsupported(`unsupported digest algorithm in reference ${JSON.stringify(s)}: only sha256 is supported`);
    }
    digest = d as Digest;
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw bad(s);
  }
  const [domain, path] = splitDomain(rest);
  if (path.toLowerCase() !== path && PATH_RE.test(path.toLowerCase())) {
    throw bad(s, `repository name (${path}) must be lowercase`);
  }
  if (!DOMAIN_RE.test(domain) || !PATH_RE.test(path)) throw bad(s);
  if (domain.length + 1 + path.length > MAX_NAME_LENGTH) {
    throw bad(s, `repository name must not be more than ${MAX_NAME_LENGTH} characters`);
  }
  return { domain, path, ...(tag !== undefined ? { tag } : {}), ...(digest !== undefined ? { digest } : {}) };
}

/** docker's TagNameOnly: a reference with neither tag nor digest gets `latest`. */
export function withDefaultTag(ref: Reference): Reference {
  return ref.tag === undefined && ref.digest === undefined ? { ...ref, tag: DEFAULT_TAG } : ref;
}

/** `docker.io/library/busybox` */
export function fullName(ref: Reference): string {
  return `${ref.domain}/${ref.path}`;
}

/** Docker's short repository name: `busybox`, `user/repo`, `localhost:5000/a/b`. */
export function familiarName(ref: Reference): string {
  if (ref.domain !== DEFAULT_DOMAIN) return fullName(ref);
  const official = ref.path.startsWith(OFFICIAL_REPO_PREFIX) && ref.path.indexOf('/', OFFICIAL_REPO_PREFIX.length) < 0;
  return official ? ref.path.slice(OFFICIAL_REPO_PREFIX.length) : ref.path;
}

const suffix = (ref: Reference) => `${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;

/** Docker's short form with tag/digest: `busybox:latest`, `localhost:5000/a/b:tag`, `x@sha256:...`. */
export function familiarString(ref: Reference): string {
  return familiarName(ref) + suffix(ref);
}

/** The full normalised form: `docker.io/library/busybox:latest`. */
export function formatReference(ref: Reference): string {
  return fullName(ref) + suffix(ref);
}

/**
 * Whether `s` could name an image by id rather than by reference: `sha256:` with hex, or bare hex (a full id or a
 * prefix). Short hex is also a valid repository name; docker tries the name first, then the id.
 */
export function looksLikeImageId(s: string): boolean {
  return /^(?:sha256:)?[a-f0-9]{1,64}$/.test(s);
}
