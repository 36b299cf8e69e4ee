import { existsSync } from 'node:fs';
import type { TestContext } from 'node:test';
import { isRoot, requireCap } from '../helpers/caps.js';
import { aufs } from '../../src/driver/aufs/aufs.js';
import { driverSuite } from './driver-suite.js';

const canMount = (t: TestContext) => requireCap(t, 'root, /dev/fuse and the fuse-overlayfs program', isRoot && existsSync('/usr/bin/fuse-overlayfs') && existsSync('/dev/fuse'));

driverSuite('aufs', (root) => aufs.init({ root, options: {} }), { mounts: true, require: canMount });
