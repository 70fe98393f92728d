// Nexus benchmark floor: POST {base}/Bench/saga at NEXUS_VUS constant VUs for NEXUS_DURATION
// (no ramp), each iteration on a seat of its own. The handler is a checkout's Restate
// skeleton (take, a journaled step, sell, a seat-map notice) without our business code.
// Classified and summarised like noop.js.
import http from 'k6/http';
import { CONFIG, SUMMARY_TREND_STATS, post, resolveRunId } from './lib/outcomes.js';

export { handleSummary } from './lib/outcomes.js';

http.setResponseCallback(http.expectedStatuses(200));

export const options = {
  scenarios: {
    saga: {
      executor: 'constant-vus',
      vus: CONFIG.vus,
      duration: CONFIG.duration,
      gracefulStop: '10s',
    },
  },
  thresholds: {
    outcome_unexpected: ['count==0'],
  },
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  return { runId: resolveRunId() };
}

function sagaOutcome(status) {
  return status === 200 ? 'confirmed' : 'unexpected';
}

export default function (data) {
  post('saga', '/Bench/saga', `${data.runId}-${__VU}-${__ITER}`, sagaOutcome);
}
