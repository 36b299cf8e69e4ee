export { Engine } from './engine.js';
export { resolveConfig, defaultDataRoot, type EngineConfig, type ConfigSources } from './config.js';
export { StrataError, type ErrorCode } from './errors.js';
export type { Driver, Change } from './driver/driver.js';
