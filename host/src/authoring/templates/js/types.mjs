// Write TypeScript declarations for this plugin's world into types/ (`npm run types`,
// run by `npm run build`), with jco's type generator.
import { generateGuestTypes, writeFiles } from '@bytecodealliance/jco-transpile';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';

const here = dirname(fileURLToPath(import.meta.url));
// jco's generator is itself a component reading the WIT through WASI, and its filesystem
// shim grants no directory by default: grant it this project's folder, nothing else.
const transpile = createRequire(fileURLToPath(import.meta.resolve('@bytecodealliance/jco-transpile')));
const shim = await import(pathToFileURL(transpile.resolve('@bytecodealliance/preview2-shim/filesystem')));
shim._setPreopens({ [here]: here });

const files = await generateGuestTypes(join(here, 'wit'), {
  worldName: 'dax:plugin/{{project_world}}',
  outDir: join(here, 'types') + '/',
});
await writeFiles(files);
console.log(`wrote ${Object.keys(files).length} declaration files to types/`);
