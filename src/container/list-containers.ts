import type { Stores } from '../stores.js';
import type { ContainerRecord } from './container-store.js';
import type { MountPoint } from './mount-spec.js';
import { imageSize } from '../image/image-layers.js';

/** One row of `docker ps` / `GET /containers/json`. */
export interface ContainerSummary {
  Id: string;
  Names: string[];
  Image: string;
  ImageID: string;
  Command: string;
  Created: number;
  State: string;
  Status: string;
  Labels: Record<string, string>;
  Mounts: MountPoint[];
  SizeRw?: number;
  SizeRootFs?: number;
}

function status(c: ContainerRecord): string {
  if (c.State.Running) return 'Up';
  if (c.State.Status === 'exited') return `Exited (${c.State.ExitCode})`;
  return 'Created';
}

export async function containerSizes(s: Stores, c: ContainerRecord): Promise<{ SizeRw: number; SizeRootFs: number }> {
  const rw = await s.layers.rwSize(await s.layers.getMount(c.ID));
  const img = await s.images.get(c.Image).catch(() => null);
  return { SizeRw: rw, SizeRootFs: rw + (img ? await imageSize(s, img) : 0) };
}

export async function listContainers(s: Stores, opts: { all?: boolean; size?: boolean } = {}): Promise<ContainerSummary[]> {
  const all = await s.containers.list();
  const shown = all.filter((c) => opts.all || c.State.Running).sort((a, b) => b.Created.localeCompare(a.Created));
  return Promise.all(
    shown.map(async (c) => ({
      Id: c.ID,
      Names: [c.Name],
      Image: c.Config.Image,
      ImageID: c.Image,
      Command: [...(c.Config.Entrypoint ?? []), ...(c.Config.Cmd ?? [])].join(' '),
      Created: Math.floor(Date.parse(c.Created) / 1000),
      State: c.State.Status,
      Status: status(c),
      Labels: c.Config.Labels ?? {},
      Mounts: Object.values(c.MountPoints ?? {}),
      ...(opts.size ? await containerSizes(s, c) : {}),
    })),
  );
}
