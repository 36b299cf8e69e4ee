import { EventEmitter } from 'node:events';
import { mkdir } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { resolveConfig, type ConfigSources, type EngineConfig } from './config.js';
import type { Stores } from './stores.js';
import { selectDriver } from './driver/driver-registry.js';
import { LayerStore } from './layer/layer-store.js';
import { ImageStore } from './image/image-store.js';
import { TagStore } from './image/tag-store.js';
import { ContainerStore } from './container/container-store.js';
import { LocalContentStore } from './content/local-content-store.js';
import { resolveImage } from './image/resolve-image.js';
import { tagImage } from './image/tag-image.js';
import { listImages, type ListImagesOptions } from './image/list-images.js';
import { inspectImage, imageHistory } from './image/inspect-image.js';
import { removeImage, pruneImages } from './image/remove-image.js';
import { importImage, type ImportOptions } from './image/import-image.js';
import { loadImages } from './image/load-images.js';
import { saveImages, saveImagesToDir, type SaveFormat } from './image/save-images.js';
import { createContainer, type CreateContainerOptions } from './container/create-container.js';
import { listContainers } from './container/list-containers.js';
import { inspectContainer } from './container/inspect-container.js';
import { containerChanges, exportContainer, mountContainer, unmountContainer } from './container/container-fs.js';
import { commitContainer, type CommitOptions } from './container/commit-container.js';
import { removeContainer } from './container/remove-container.js';
import { closeAllContainerFs, openContainerFs, type ContainerFs } from './container/open-container-fs.js';
import { copyFromContainer, copyFromContainerTar, copyToContainer, type CopyOptions } from './container/container-cp.js';
import { createVolume, inspectVolume, listVolumes, pruneVolumes, removeVolume, type CreateVolumeOptions } from './volume/manage-volumes.js';
import { diskUsage } from './system/disk-usage.js';
import { systemInfo, versionInfo } from './system/system-info.js';
import { systemPrune } from './system/system-prune.js';
import { pullImage, type PullOptions } from './registry/pull-image.js';
import { pushImage, type PushOptions } from './registry/push-image.js';
import { login, logout } from './registry/login.js';
import type { Credentials } from './registry/credentials.js';

/**
 * strata's engine: one data-root, one storage driver, the image, layer and container stores over it.
 * The CLI and the daemon are thin layers over these methods. Progress is emitted as `progress` events.
 */
export class Engine extends EventEmitter {
  private constructor(
    readonly config: EngineConfig,
    private readonly s: Stores,
  ) {
    super();
  }

  /** Flags-like sources (`dataRoot`, `storageDriver`, `storageOpts: ['k=v']`, `configFile`), merged as the CLI does. */
  static async open(src: ConfigSources = {}): Promise<Engine> {
    const config = resolveConfig(src);
    await mkdir(config.dataRoot, { recursive: true, mode: 0o711 });
    const driver = await selectDriver({ root: config.dataRoot, name: config.storageDriver, options: config.storageOpts });
    const events = new EventEmitter();
    const s: Stores = {
      root: config.dataRoot,
      driver,
      layers: new LayerStore(config.dataRoot, driver),
      images: new ImageStore(config.dataRoot, driver.name),
      tags: new TagStore(config.dataRoot, driver.name),
      containers: new ContainerStore(config.dataRoot),
      content: new LocalContentStore(config.dataRoot),
      events,
    };
    await Promise.all([s.layers.init(), s.images.init(), s.containers.init()]);
    const engine = new Engine(config, s);
    events.on('progress', (p) => engine.emit('progress', p));
    return engine;
  }

  get driverName(): string {
    return this.s.driver.name;
  }

  /** Close the container filesystems still open and unmount what this process mounted. */
  async close(): Promise<void> {
    await closeAllContainerFs(this.s);
    await this.s.driver.cleanup();
  }

  // --- images ---
  load(source: Readable | { dir: string }) {
    return loadImages(this.s, source);
  }
  save(refs: string[], format: SaveFormat = 'docker') {
    return saveImages(this.s, refs, format);
  }
  saveToDir(refs: string[], dir: string) {
    return saveImagesToDir(this.s, refs, dir);
  }
  import(source: Readable, opts: ImportOptions = {}) {
    return importImage(this.s, source, opts);
  }
  images(opts: ListImagesOptions = {}) {
    return listImages(this.s, opts);
  }
  inspectImage(ref: string) {
    return inspectImage(this.s, ref);
  }
  history(ref: string) {
    return imageHistory(this.s, ref);
  }
  async tag(source: string, target: string): Promise<void> {
    await tagImage(this.s, (await resolveImage(this.s, source)).id, target);
  }
  rmi(ref: string, opts: { force?: boolean } = {}) {
    return removeImage(this.s, ref, opts);
  }
  pruneImages(opts: { all?: boolean } = {}) {
    return pruneImages(this.s, opts);
  }
  pull(ref: string, opts: PullOptions = {}) {
    return pullImage(this.s, this.config.registry, ref, opts);
  }
  push(ref: string, opts: PushOptions = {}) {
    return pushImage(this.s, this.config.registry, ref, opts);
  }
  login(server: string | undefined, credentials: Credentials) {
    return login(this.config.registry, server, credentials);
  }
  logout(server: string | undefined) {
    return logout(server);
  }

  // --- containers ---
  create(opts: CreateContainerOptions) {
    return createContainer(this.s, opts);
  }
  containers(opts: { all?: boolean; size?: boolean } = {}) {
    return listContainers(this.s, opts);
  }
  inspectContainer(idOrName: string, opts: { size?: boolean } = {}) {
    return inspectContainer(this.s, idOrName, opts);
  }
  mount(idOrName: string) {
    return mountContainer(this.s, idOrName);
  }
  unmount(idOrName: string) {
    return unmountContainer(this.s, idOrName);
  }
  diff(idOrName: string) {
    return containerChanges(this.s, idOrName);
  }
  commit(idOrName: string, opts: CommitOptions = {}) {
    return commitContainer(this.s, idOrName, opts);
  }
  export(idOrName: string) {
    return exportContainer(this.s, idOrName);
  }
  /**
   * The container's filesystem with the node:fs/promises surface (`await fs.readFile('/etc/hostname')`),
   * mounted or not; `close()` it when done. rm refuses the container while it is open (rm -f closes it).
   */
  containerFs(idOrName: string): Promise<ContainerFs> {
    return openContainerFs(this.s, idOrName);
  }
  rm(idOrName: string, opts: { force?: boolean; volumes?: boolean } = {}) {
    return removeContainer(this.s, idOrName, opts);
  }
  copyTo(idOrName: string, dstPath: string, source: { path: string } | { tar: AsyncIterable<Buffer> }, opts: CopyOptions = {}) {
    return copyToContainer(this.s, idOrName, dstPath, source, opts);
  }
  copyFrom(idOrName: string, srcPath: string, dstPath: string, opts: CopyOptions = {}) {
    return copyFromContainer(this.s, idOrName, srcPath, dstPath, opts);
  }
  copyFromTar(idOrName: string, srcPath: string, opts: CopyOptions = {}) {
    return copyFromContainerTar(this.s, idOrName, srcPath, opts);
  }

  // --- volumes ---
  createVolume(opts: CreateVolumeOptions = {}) {
    return createVolume(this.s, opts);
  }
  volumes(filters: string[] = []) {
    return listVolumes(this.s, filters);
  }
  inspectVolume(name: string) {
    return inspectVolume(this.s, name);
  }
  removeVolume(name: string, opts: { force?: boolean } = {}) {
    return removeVolume(this.s, name, opts);
  }
  pruneVolumes(opts: { all?: boolean; filters?: string[] } = {}) {
    return pruneVolumes(this.s, opts);
  }

  // --- system ---
  df() {
    return diskUsage(this.s);
  }
  prune(opts: { all?: boolean } = {}) {
    return systemPrune(this.s, opts);
  }
  info() {
    return systemInfo(this.s);
  }
  version() {
    return versionInfo();
  }
}
