import { cpus, hostname, release, totalmem } from 'node:os';
import { createRequire } from 'node:module';
import type { Stores } from '../stores.js';

const pkg = createRequire(import.meta.url)('../../package.json') as { version: string };

export const API_VERSION = '1.51';
export const MIN_API_VERSION = '1.24';
export const STRATA_VERSION = pkg.version;

/** Node's names for architectures, in Go's (OCI's) spelling. */
export function ociArch(arch: string = process.arch): string {
  return ({ x64: 'amd64', ia32: '386', arm64: 'arm64', arm: 'arm', ppc64: 'ppc64le', s390x: 's390x', riscv64: 'riscv64' } as Record<string, string>)[arch] ?? arch;
}

export async function systemInfo(s: Stores) {
  const containers = await s.containers.list();
  const running = containers.filter((c) => c.State.Running).length;
  return {
    ID: '',
    Containers: containers.length,
    ContainersRunning: running,
    ContainersPaused: 0,
    ContainersStopped: containers.length - running,
    Images: (await s.images.ids()).length,
    Driver: s.driver.name,
    DriverStatus: await s.driver.status(),
    DockerRootDir: s.root,
    Name: hostname(),
    OperatingSystem: 'linux',
    OSType: 'linux',
    Architecture: ociArch(),
    KernelVersion: release(),
    NCPU: cpus().length,
    MemTotal: totalmem(),
    ServerVersion: STRATA_VERSION,
  };
}

export function versionInfo() {
  return {
    Version: STRATA_VERSION,
    ApiVersion: API_VERSION,
    MinAPIVersion: MIN_API_VERSION,
    NodeVersion: process.version,
    Os: 'linux',
    Arch: ociArch(),
    KernelVersion: release(),
  };
}
