import { native } from '../native/native.js';
import { isMountPoint } from '../driver/mount-table.js';
import { execTool } from '../util/exec.js';
import { invalidArgument } from '../errors.js';

/** The local driver's options: as given (`-o type= -o device= -o o=`) and as Docker's opts.json stores them. */
export interface VolumeOptions {
  cli: Record<string, string>;
  raw: { MountType: string; MountOpts: string; MountDevice: string; Quota: { Size: number } };
}

const VALID = new Set(['type', 'device', 'o']);

/** Validate `-o` options with Docker's rules (`device` and `type` need each other, `o` needs both); `stored` reads opts.json. */
export function parseVolumeOptions(o: Record<string, string>, stored = false): VolumeOptions {
  const cli = stored
    ? Object.fromEntries(
        Object.entries({ type: o.MountType, device: o.MountDevice, o: o.MountOpts }).filter((e): e is [string, string] => typeof e[1] === 'string' && e[1] !== ''),
      )
    : { ...o };
  for (const k of Object.keys(cli)) if (!VALID.has(k)) throw invalidArgument(`invalid option: "${k}" (the local driver knows type, device and o)`);
  if (cli.type && !cli.device) throw invalidArgument('missing required option: "device"');
  if (cli.device && !cli.type) throw invalidArgument('missing required option: "type"');
  if (cli.o && !cli.type) throw invalidArgument('missing required option: "type"');
  return { cli, raw: { MountType: cli.type ?? '', MountOpts: cli.o ?? '', MountDevice: cli.device ?? '', Quota: { Size: 0 } } };
}

/** Mount a volume that has a `type` on its data directory, unless mounted already; true if this call mounted it. */
export async function mountVolumeData(dataPath: string, options: Record<string, string>): Promise<boolean> {
  if (!options.type || isMountPoint(dataPath)) return false;
  await execTool('mount', ['-t', options.type, options.device!, dataPath, ...(options.o ? ['-o', options.o] : [])]);
  return true;
}

export function unmountVolumeData(dataPath: string): void {
  native.umount(dataPath, 0);
}

/**
 * Run `fn` with the volume's data directory usable: a volume with a `type` is mounted there first, as
 * Docker's local driver does (`mount -t TYPE DEVICE _data -o O`), and unmounted after unless it was
 * mounted already (by a runtime, or by another operation still using it).
 */
export async function withVolumeData<T>(dataPath: string, options: Record<string, string>, fn: (path: string) => Promise<T>): Promise<T> {
  const mounted = await mountVolumeData(dataPath, options);
  try {
    return await fn(dataPath);
  } finally {
    if (mounted) unmountVolumeData(dataPath);
  }
}
