import { posix } from 'node:path';
import { invalidArgument } from '../errors.js';
import { validateVolumeName } from '../volume/volume-store.js';

export type MountType = 'volume' | 'bind' | 'tmpfs';

/** One mount of a container, with the fields Docker's config.v2.json MountPoints and `inspect` Mounts show. */
export interface MountPoint {
  Type: MountType;
  /** Volume name ('' for bind and tmpfs). */
  Name: string;
  /** Host path: the volume's `_data`, the bind source ('' for tmpfs). */
  Source: string;
  Destination: string;
  Driver: string;
  Mode: string;
  RW: boolean;
  Propagation: string;
}

/** A mount as the user asked for it, before any volume exists. */
export interface MountRequest {
  type: MountType;
  /** Volume name or host path; '' for an anonymous volume or tmpfs. */
  source: string;
  target: string;
  readOnly: boolean;
  /** Fill an empty volume from the image's content at target (volumes only). */
  copyData: boolean;
  mode: string;
  propagation: string;
  /** `--mount volume-opt=` / `volume-label=`: for a named volume this create makes. */
  volumeOpts: Record<string, string>;
  volumeLabels: Record<string, string>;
}

/** Docker's `--mount` record (HostConfig.Mounts), as given. */
export interface MountRecord {
  Type: MountType;
  Source?: string;
  Target: string;
  ReadOnly?: boolean;
  VolumeOptions?: { NoCopy?: boolean; Labels?: Record<string, string>; DriverConfig?: { Name: string; Options: Record<string, string> } };
  BindOptions?: { Propagation: string };
}

const PROPAGATION = new Set(['private', 'rprivate', 'shared', 'rshared', 'slave', 'rslave']);

function checkTarget(target: string, type: MountType): string {
  if (!target.startsWith('/')) throw invalidArgument(`invalid mount config for type "${type}": invalid mount path: '${target}' mount path must be absolute`);
  const clean = posix.normalize(target).replace(/(.)\/+$/, '$1');
  if (clean === '/') throw invalidArgument(`invalid mount config for type "${type}": destination can't be '/'`);
  return clean;
}

function request(type: MountType, source: string, target: string): MountRequest {
  return { type, source, target: checkTarget(target, type), readOnly: false, copyData: type === 'volume', mode: '', propagation: type === 'bind' ? 'rprivate' : '', volumeOpts: {}, volumeLabels: {} };
}

/** A host path for a bind, or a volume name (validated). */
function sourceKind(source: string): MountType {
  if (source.startsWith('/')) return 'bind';
  validateVolumeName(source);
  return 'volume';
}

/** `-v [SOURCE:]TARGET[:MODE]` with Docker's linux parser rules. */
export function parseVolumeFlag(spec: string): MountRequest {
  const bad = () => invalidArgument(`invalid volume specification: '${spec}'`);
  const parts = spec.split(':');
  if (parts[0] === '' || parts.length > 3 || parts.some((p) => p === '' && parts.length > 1)) throw bad();
  if (parts.length === 1) return request('volume', '', parts[0]!);
  if (parts.length === 2 && isModeList(parts[1]!)) throw bad();
  const [source, target, mode = ''] = parts as [string, string, string?];
  const r = request(sourceKind(source), source, target);
  r.mode = mode;
  const seen = { rw: false, copy: false, prop: false, label: false };
  for (const m of mode === '' ? [] : mode.split(',')) {
    if ((m === 'ro' || m === 'rw') && !seen.rw) {
      seen.rw = true;
      r.readOnly = m === 'ro';
    } else if (m === 'nocopy' && !seen.copy && r.type === 'volume') {
      seen.copy = true;
      r.copyData = false;
    } else if (PROPAGATION.has(m) && !seen.prop) {
      seen.prop = true;
      r.propagation = m;
    } else if ((m === 'z' || m === 'Z') && !seen.label) {
      seen.label = true;
    } else {
      throw invalidArgument(`invalid mode: ${mode}`);
    }
  }
  return r;
}

function isModeList(s: string): boolean {
  return s.split(',').every((m) => m === 'ro' || m === 'rw' || m === 'nocopy' || m === 'z' || m === 'Z' || PROPAGATION.has(m));
}

function boolValue(key: string, v: string | undefined): boolean {
  if (v === undefined || v === 'true' || v === '1') return true;
  if (v === 'false' || v === '0') return false;
  throw invalidArgument(`invalid value for ${key}: ${v}`);
}

/** `--mount type=volume|bind|tmpfs,source=,target=,readonly,volume-nocopy,...` (docker's csv syntax). */
export function parseMountFlag(csv: string): { request: MountRequest; record: MountRecord } {
  const kv = new Map<string, string | undefined>();
  const volumeOpts: Record<string, string> = {};
  const volumeLabels: Record<string, string> = {};
  for (const field of csv.split(',')) {
    if (field === '') continue;
    const eq = field.indexOf('=');
    const key = (eq < 0 ? field : field.slice(0, eq)).trim().toLowerCase();
    const value = eq < 0 ? undefined : field.slice(eq + 1);
    if (key === 'volume-opt' || key === 'volume-label') {
      const v = value ?? '';
      const i = v.indexOf('=');
      if (i <= 0) throw invalidArgument(`invalid ${key} '${v}' in '${csv}': expected key=value`);
      (key === 'volume-opt' ? volumeOpts : volumeLabels)[v.slice(0, i)] = v.slice(i + 1);
      continue;
    }
    const canonical = { src: 'source', dst: 'target', destination: 'target', ro: 'readonly' }[key] ?? key;
    if (!['type', 'source', 'target', 'readonly', 'volume-nocopy', 'bind-propagation', 'volume-driver', 'consistency'].includes(canonical)) {
      throw invalidArgument(`unexpected key '${key}' in '${field}'`);
    }
    if ((canonical === 'readonly' || canonical === 'volume-nocopy') && value !== undefined && value === '') throw invalidArgument(`invalid value for ${key}: ''`);
    if (!['readonly', 'volume-nocopy'].includes(canonical) && value === undefined) throw invalidArgument(`invalid field '${field}' must be a key=value pair`);
    kv.set(canonical, value);
  }
  const type = kv.get('type') ?? 'volume';
  if (type !== 'volume' && type !== 'bind' && type !== 'tmpfs') throw invalidArgument(`invalid mount type "${type}": strata supports volume, bind and tmpfs`);
  const target = kv.get('target');
  if (target === undefined || target === '') throw invalidArgument(`invalid mount config for type "${type}": field Target must not be empty`);
  const source = kv.get('source') ?? '';
  if (type === 'bind' && source === '') throw invalidArgument('invalid mount config for type "bind": field Source must not be empty');
  if (type === 'bind' && !source.startsWith('/')) throw invalidArgument(`invalid mount config for type "bind": invalid mount path: '${source}' mount path must be absolute`);
  if (type === 'tmpfs' && source !== '') throw invalidArgument('invalid mount config for type "tmpfs": field Source must be empty');
  if (type === 'volume' && source !== '') validateVolumeName(source);
  const driver = kv.get('volume-driver');
  if (driver !== undefined && driver !== 'local') throw invalidArgument(`volume driver "${driver}" is not available: strata has the local driver only`);
  const volumeOnly = kv.has('volume-nocopy') || Object.keys(volumeOpts).length > 0 || Object.keys(volumeLabels).length > 0;
  if (volumeOnly && type !== 'volume') throw invalidArgument(`invalid mount config for type "${type}": volume options are for type=volume only`);
  if (kv.has('bind-propagation') && type !== 'bind') throw invalidArgument(`invalid mount config for type "${type}": bind-propagation is for type=bind only`);
  const prop = kv.get('bind-propagation');
  if (prop !== undefined && !PROPAGATION.has(prop)) throw invalidArgument(`invalid bind-propagation: ${prop}`);

  const r = request(type, source, target);
  r.readOnly = kv.has('readonly') && boolValue('readonly', kv.get('readonly'));
  r.copyData = type === 'volume' && !(kv.has('volume-nocopy') && boolValue('volume-nocopy', kv.get('volume-nocopy')));
  if (prop) r.propagation = prop;
  r.volumeOpts = volumeOpts;
  r.volumeLabels = volumeLabels;
  const record: MountRecord = { Type: type, ...(source ? { Source: source } : {}), Target: target, ...(r.readOnly ? { ReadOnly: true } : {}) };
  if (type === 'volume' && (!r.copyData || Object.keys(volumeOpts).length > 0 || Object.keys(volumeLabels).length > 0)) {
    record.VolumeOptions = {
      ...(!r.copyData ? { NoCopy: true } : {}),
      ...(Object.keys(volumeLabels).length > 0 ? { Labels: volumeLabels } : {}),
      ...(Object.keys(volumeOpts).length > 0 ? { DriverConfig: { Name: 'local', Options: volumeOpts } } : {}),
    };
  }
  if (prop) record.BindOptions = { Propagation: prop };
  return { request: r, record };
}

/** `--volumes-from CONTAINER[:ro|rw]`. */
export function parseVolumesFrom(spec: string): { container: string; readOnly: boolean } {
  const i = spec.lastIndexOf(':');
  if (i < 0) return { container: spec, readOnly: false };
  const mode = spec.slice(i + 1);
  if (mode !== 'ro' && mode !== 'rw') throw invalidArgument(`invalid mode for volumes-from: ${mode}`);
  if (i === 0) throw invalidArgument(`invalid volumes-from: '${spec}'`);
  return { container: spec.slice(0, i), readOnly: mode === 'ro' };
}
