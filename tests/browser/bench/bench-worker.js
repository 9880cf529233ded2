// Runs the codec benchmark of the wasm node in a worker, as the node itself runs: `{ params,
// rounds }` measures each stage; `{ putWork: [k, m, mib] }` and `{ getWork: [k, m, mib] }`
// time the computing of a put or a get alone (see `floors` in bench.html). `{}` only loads
// the node, and answers once it has.
import init, { benchCodec, benchGetWork, benchPutWork } from '../shardweb/pkg/shardweb_wasm.js';

self.onmessage = async ({ data }) => {
  await init();
  if (data.putWork) {
    self.postMessage(await benchPutWork(...data.putWork));
    return;
  }
  if (data.getWork) {
    self.postMessage(await benchGetWork(...data.getWork));
    return;
  }
  const results = {};
  for (const [k, m] of data.params ?? []) {
    results[`(${k}, ${m})`] = await benchCodec(k, m, data.rounds);
  }
  self.postMessage(results);
};
