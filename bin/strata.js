// The CLI is compiled to dist/ and bundled into one module (loading ~120 separate modules cost ~75 ms per
// command) by `npm ci` (prepare) or `npm run build`.
import { main } from '../dist/cli/bundle.js';

process.exitCode = await main(process.argv);
