// A dax metric provider in JavaScript. It implements the same WIT world as a Rust plugin
// (wit/metric-provider.wit, world `metric-provider-plugin`): `plugin` + `metric-provider`.
//
// Query texts: `value:N` answers N, `series:a,b,c` a series, anything else no data.
// WIT results map to JS by throwing for `err` (the thrown value is the plugin-error variant).

import { log } from 'dax:host/log@0.1.0';

export const plugin = {
  describe() {
    return {
      name: 'js-metrics',
      version: '0.1.0',
      role: 'metric-provider',
      description: 'Echoes numbers in queries (JavaScript example)',
      configSchema: '{"type":"object","properties":{"scale":{"type":"number"}}}',
    };
  },
  validateConfig(config) {
    const parsed = JSON.parse(config);
    if (parsed.scale !== undefined && typeof parsed.scale !== 'number') {
      return [{ field: 'scale', message: '`scale` must be a number' }];
    }
    return [];
  },
};

export const metricProvider = {
  runQuery(config, q) {
    const scale = JSON.parse(config).scale ?? 1;
    log('debug', `query ${q.text}`);
    if (q.text.startsWith('value:')) {
      const v = Number(q.text.slice(6));
      if (Number.isNaN(v)) {
        throw { tag: 'invalid-input', val: `not a number: ${q.text.slice(6)}` };
      }
      return { tag: 'value', val: v * scale };
    }
    if (q.text.startsWith('series:')) {
      const values = q.text.slice(7).split(',').map(Number);
      return { tag: 'series', val: values.map((v, i) => ({ timestampMs: BigInt(i * 1000), value: v * scale })) };
    }
    return { tag: 'no-data', val: `no series matches \`${q.text}\`` };
  },
};
