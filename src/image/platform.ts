import { invalidArgument, notFound } from '../errors.js';
import type { Descriptor, ImageIndex } from './manifest.js';
import { isIndexMediaType, isManifestMediaType } from './media-types.js';

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
  features?: string[];
}

/** Node's process.arch in GOARCH terms, the vocabulary of image platforms. */
const goArch: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loong64',
  mips: 'mips',
  mipsel: 'mipsle',
};

/** The platform this process runs on (linux/amd64 on x64, linux/arm/v7 on a v7 arm, ...). */
export function currentPlatform(): Platform {
  const architecture = goArch[process.arch] ?? process.arch;
  if (architecture === 'arm') {
    const v = (process.config.variables as Record<string, unknown>).arm_version;
    return { os: 'linux', architecture, variant: `v${typeof v === 'string' || typeof v === 'number' ? v : '7'}` };
  }
  return { os: 'linux', architecture };
}

/** `linux/arm64/v8` -> Platform; os and architecture required. */
export function parsePlatform(s: string): Platform {
  const parts = s.toLowerCase().split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === '')) {
    throw invalidArgument(`invalid platform "${s}": want os/arch[/variant]`);
  }
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return variant ? { os, architecture, variant } : { os, architecture };
}

export function formatPlatform(p: Platform): string {
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/** Variants that mean "none given": arm64 is v8 by default, amd64 v1. */
function normalVariant(p: Platform): string | undefined {
  if (p.architecture === 'arm64' && (p.variant === undefined || p.variant === 'v8')) return undefined;
  if (p.architecture === 'amd64' && p.variant === 'v1') return undefined;
  return p.variant;
}

/**
 * Whether an image for `have` runs on `want`: same os and architecture; a wanted variant must be met (arm v7 runs
 * v6 and v5 images, amd64 v3 runs v2 and v1), and an image without a variant runs anywhere its architecture does.
 */
export function platformMatches(want: Platform, have: Platform): boolean {
  if (want.os !== have.os || want.architecture !== have.architecture) return false;
  const w = normalVariant(want);
  const h = normalVariant(have);
  if (h === undefined || w === h) return true;
  if (w === undefined) return false;
  const level = (v: string) => (/^v\d+$/.test(v) ? Number(v.slice(1)) : NaN);
  return level(h) <= level(w);
}

/** Attestations and other non-runnable entries Docker puts in indexes (`unknown/unknown`, reference type annotation). */
function isAttestation(d: Descriptor): boolean {
  return d.annotations?.['vnd.docker.reference.type'] !== undefined || (d.platform?.os === 'unknown' && d.platform.architecture === 'unknown');
}

/**
 * The index entry to use on `want`: the only image entry when there is one without a platform, else the
 * best-matching platform (exact variant first, then the highest compatible one).
 */
export function selectManifest(index: ImageIndex, want: Platform = currentPlatform()): Descriptor {
  const candidates = index.manifests.filter((d) => (isManifestMediaType(d.mediaType) || isIndexMediaType(d.mediaType)) && !isAttestation(d));
  if (candidates.length === 1 && candidates[0]!.platform === undefined) return candidates[0]!;
  const matching = candidates.filter((d) => d.platform !== undefined && platformMatches(want, d.platform));
  const exact = matching.find((d) => normalVariant(d.platform!) === normalVariant(want));
  const best = exact ?? matching.sort((a, b) => (b.platform!.variant ?? '').localeCompare(a.platform!.variant ?? '', 'en', { numeric: true }))[0];
  if (!best) {
    const have = candidates.map((d) => (d.platform ? formatPlatform(d.platform) : 'unspecified')).join(', ');
    throw notFound(`no matching manifest for ${formatPlatform(want)} in the manifest list entries (have: ${have || 'none'})`);
  }
  return best;
}
