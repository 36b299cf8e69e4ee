import type { EventEmitter } from 'node:events';
import type { Driver } from './driver/driver.js';
import type { LayerStore } from './layer/layer-store.js';
import type { ImageStore } from './image/image-store.js';
import type { TagStore } from './image/tag-store.js';
import type { ContainerStore } from './container/container-store.js';
import type { ContentStore } from './content/content-store.js';

/** Everything an operation needs, handed to the functions that implement the engine's verbs. */
export interface Stores {
  root: string;
  driver: Driver;
  layers: LayerStore;
  images: ImageStore;
  tags: TagStore;
  containers: ContainerStore;
  content: ContentStore;
  /** Progress events (`progress`: { id, status, detail }), as the CLI and API render them. */
  events: EventEmitter;
}
