export { Engine } from './engine.js';
export { resolveConfig, defaultDataRoot, type EngineConfig, type ConfigSources } from './config.js';
export { StrataError, type ErrorCode } from './errors.js';
export type { Driver, Change } from './driver/driver.js';
export type { ContainerFs } from './container/open-container-fs.js';
export { openUnion, type Branch, type BranchMode, type UnionFs, type UnionDirent, type UnionDir, type UnionFileHandle } from './union/open-union.js';
