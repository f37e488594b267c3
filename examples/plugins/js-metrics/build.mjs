// Build plugin.js into a component. `dax plugin build` runs this (npm run build) and sets
// DAX_PLUGIN_OUT; by hand it writes js-metrics.wasm here.
import { componentize } from '@bytecodealliance/componentize-js';
import { writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const { component } = await componentize({
  sourcePath: join(here, 'plugin.js'),
  witPath: resolve(here, '../../../wit'),
  worldName: 'metric-provider-plugin',
  // Deny-by-default: the plugin needs none of these, so they are not even imported.
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
const out = process.env.DAX_PLUGIN_OUT ?? join(here, 'js-metrics.wasm');
await writeFile(out, component);
console.log(`wrote ${out} (${component.length} bytes)`);
