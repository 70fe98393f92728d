// Nexus benchmark floor: POST {base}/Bench/saga at NEXUS_VUS constant VUs for NEXUS_DURATION
// (no ramp), each iteration on a seat of its own. The handler is a checkout's Restate
// skeleton (take, a journaled step, sell, a seat-map notice) without our business code.
// Classified and summarised like noop.js.
import http from 'k6/http';
import { benchOptions, benchOutcome, post, resolveRunId } from './lib/outcomes.js';

export { handleSummary } from './lib/outcomes.js';

http.setResponseCallback(http.expectedStatuses(200));

export const options = benchOptions('saga');

export function setup() {
  return { runId: resolveRunId() };
}

export default function (data) {
  post('saga', '/Bench/saga', `${data.runId}-${__VU}-${__ITER}`, benchOutcome);
}
