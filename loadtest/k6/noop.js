// Nexus benchmark baseline: POST {base}/Bench/noop with body {} at NEXUS_VUS constant VUs for
// NEXUS_DURATION (no ramp). 200 counts as outcome_confirmed, anything else as
// outcome_unexpected; checkout_duration holds the request durations, so ops/k6.py parses this
// summary like the checkout one. Same summary mechanism (handleSummary, NEXUS_SUMMARY_FILE).
import http from 'k6/http';
import { CONFIG, SUMMARY_TREND_STATS, post } from './lib/outcomes.js';

export { handleSummary } from './lib/outcomes.js';

http.setResponseCallback(http.expectedStatuses(200));

export const options = {
  scenarios: {
    noop: {
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

function noopOutcome(status) {
  return status === 200 ? 'confirmed' : 'unexpected';
}

export default function () {
  post('noop', '/Bench/noop', {}, noopOutcome);
}
