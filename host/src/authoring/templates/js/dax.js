// Small helpers for dax plugins in JavaScript. How WIT maps to JavaScript (componentize-js,
// the same rules as the declarations in types/, made by `npm run types` with `jco types`):
//   record          -> object with camelCase keys (`window-ms` -> windowMs)
//   variant         -> { tag: 'kebab-name', val }   (val absent for cases without payload)
//   enum            -> 'kebab-name' string
//   u64 / s64       -> BigInt (write 1000n, or BigInt(x)); other numbers -> number
//   list<u8>        -> Uint8Array;  option<T> -> T | undefined;  tuple -> array
//   result<T, E>    -> return T; throw E to return the error (see `fail` below)
import { log as hostLog } from 'dax:host/log@0.1.0';

/** @typedef {'invalid-config'|'invalid-input'|'unavailable'|'not-found'|'unsupported'|'internal'} ErrorKind */

/**
 * Return a `plugin-error` from a call: `throw fail('invalid-input', 'not a number')`.
 * @param {ErrorKind} kind
 * @param {string} message
 */
export function fail(kind, message) {
  return { tag: kind, val: message };
}

/**
 * The answer of `describe`.
 * @param {string} name @param {string} version
 * @param {'target'|'scanner'|'metric-provider'|'strategy'} role
 * @param {string} description @param {object} configSchema JSON Schema of the config
 */
export function info(name, version, role, description, configSchema = {}) {
  return { name, version, role, description, configSchema: JSON.stringify(configSchema) };
}

/**
 * Parse the JSON config the host passes to every call, with defaults for absent keys;
 * an unknown key is an `invalid-config` error (typos fail loudly).
 * @template {object} T
 * @param {string} config @param {T} defaults
 * @returns {T}
 */
export function parseConfig(config, defaults) {
  let parsed;
  try {
    parsed = JSON.parse(config);
  } catch (e) {
    throw fail('invalid-config', `config is not JSON: ${e}`);
  }
  for (const key of Object.keys(parsed)) {
    if (!(key in defaults)) {
      throw fail('invalid-config', `unknown key \`${key}\`; the keys are: ${Object.keys(defaults).join(', ')}`);
    }
  }
  return { ...defaults, ...parsed };
}

/**
 * `validate-config` from `parseConfig`: one problem or none.
 * @param {string} config @param {object} defaults
 */
export function validateWith(config, defaults) {
  try {
    parseConfig(config, defaults);
    return [];
  } catch (e) {
    return [{ field: '', message: e.val ?? String(e) }];
  }
}

/** Log through the host: lines appear in dax's output tagged with the plugin's name. */
export const log = {
  debug: (m) => hostLog('debug', m),
  info: (m) => hostLog('info', m),
  warn: (m) => hostLog('warn', m),
  error: (m) => hostLog('error', m),
};
