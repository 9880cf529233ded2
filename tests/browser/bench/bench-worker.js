// Runs the codec benchmark of the wasm node in a worker, as the node itself runs.
import init, { benchCodec } from '../shardweb/pkg/shardweb_wasm.js';

self.onmessage = async ({ data }) => {
  await init();
  const results = {};
  for (const [k, m] of data.params) {
    results[`(${k}, ${m})`] = await benchCodec(k, m, data.rounds);
  }
  self.postMessage(results);
};
