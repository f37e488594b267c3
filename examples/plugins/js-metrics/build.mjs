// Build plugin.js into a component. `dax plugin build` runs this (npm run build) and sets
// DAX_PLUGIN_OUT; by hand it writes js-metrics.wasm here.
import { componentize } from '@bytecodealliance/componentize-js';
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { dirname, join, resolve } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
// componentize-js imports every interface of the world it builds, used or not, and dax refuses
// a plugin importing a capability it was not granted (dax:host/kube...). So build a world of
// the contract's package that imports only what this plugin uses: log.
const wit = await mkdtemp(join(tmpdir(), 'js-metrics-wit-'));
await cp(resolve(here, '../../../wit'), wit, { recursive: true });
await writeFile(join(wit, 'project.wit'), `world metric-provider-project {
    import dax:host/log@0.1.0;
    export plugin;
    export metric-provider;
}
`);
const { component } = await componentize({
  sourcePath: join(here, 'plugin.js'),
  witPath: wit,
  worldName: 'metric-provider-project',
  // Deny-by-default: the plugin needs none of these, so they are not even imported.
  disableFeatures: ['stdio', 'random', 'clocks', 'http', 'fetch-event'],
});
await rm(wit, { recursive: true, force: true });
const out = process.env.DAX_PLUGIN_OUT ?? join(here, 'js-metrics.wasm');
await writeFile(out, component);
console.log(`wrote ${out} (${component.length} bytes)`);
