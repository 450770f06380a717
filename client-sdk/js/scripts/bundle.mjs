// Writes dist/bundle/tickwire.esm.js: the client and @msgpack/msgpack as one
// minified ES module for browsers (the broker's dashboard embeds a copy).
// Deterministic: no timestamps, no source maps, no absolute paths, a fixed
// target, so the same sources always give the same bytes.
import { build } from 'esbuild';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

await build({
  absWorkingDir: root,
  entryPoints: ['src/index.ts'],
  outfile: 'dist/bundle/tickwire.esm.js',
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2022',
  minify: true,
  sourcemap: false,
  legalComments: 'none',
  charset: 'utf8',
  banner: { js: '// @tickwire/client browser bundle (includes @msgpack/msgpack, ISC). Built by `npm run bundle`; do not edit.' },
  logLevel: 'warning',
});
