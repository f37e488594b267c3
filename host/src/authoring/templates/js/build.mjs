// Build plugin.js into a component with componentize-js. `dax plugin build` runs this
// (`npm run build`) and sets DAX_PLUGIN_OUT; by hand it writes dist/{{name}}.wasm.
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
const { component } = await componentize({
  sourcePath: join(here, 'plugin.js'),
  witPath: join(here, 'wit'),
  worldName: '{{project_world}}',
  // Deny by default: none of these are imported, so the plugin cannot even ask for them.
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
const out = process.env.DAX_PLUGIN_OUT ?? join(here, 'dist', '{{name}}.wasm');
await mkdir(dirname(out), { recursive: true });
await writeFile(out, component);
console.log(`wrote ${out} (${component.length} bytes)`);
