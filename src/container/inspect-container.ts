import type { Stores } from '../stores.js';
import { containerSizes } from './list-containers.js';

/** `docker inspect CONTAINER`, with docker's field names. */
export async function inspectContainer(s: Stores, idOrName: string, opts: { size?: boolean } = {}) {
  const c = await s.containers.resolve(idOrName);
  const mount = await s.layers.getMount(c.ID);
  const command = [...(c.Config.Entrypoint ?? []), ...(c.Config.Cmd ?? [])];
  return {
    Id: c.ID,
    Created: c.Created,
    Path: command[0] ?? '',
    Args: command.slice(1),
    State: { ...c.State, Paused: false, Restarting: false, OOMKilled: false, Dead: false, Error: '' },
    Image: c.Image,
    Name: c.Name,
    RestartCount: 0,
    Driver: c.Driver,
    Platform: 'linux',
    GraphDriver: { Name: s.driver.name, Data: await s.driver.metadata(mount.mountID) },
    Mounts: Object.values(c.MountPoints ?? {})
      .sort((a, b) => a.Destination.localeCompare(b.Destination))
      // Docker leaves Name and Driver out for binds and tmpfs.
      .map(({ Name, Driver, ...m }) => ({ Type: m.Type, ...(Name ? { Name } : {}), Source: m.Source, Destination: m.Destination, ...(Driver ? { Driver } : {}), Mode: m.Mode, RW: m.RW, Propagation: m.Propagation })),
    Config: c.Config,
    HostConfig: c.HostConfig ?? { Binds: null, VolumesFrom: null, ReadonlyRootfs: false },
    ...(opts.size ? await containerSizes(s, c) : {}),
  };
}
