// Nexus benchmark baseline: POST {base}/Bench/noop with body {} at NEXUS_VUS constant VUs for
// NEXUS_DURATION (no ramp). 200 counts as outcome_confirmed, anything else as
// outcome_unexpected; checkout_duration holds the request durations, so ops/testing/k6.py parses this
// summary like the checkout one. Same summary mechanism (handleSummary, NEXUS_SUMMARY_FILE).
import http from 'k6/http';
import { benchOptions, benchOutcome, post } from './lib/outcomes.js';

export { handleSummary } from './lib/outcomes.js';

http.setResponseCallback(http.expectedStatuses(200));

export const options = benchOptions('noop');

export default function () {
  post('noop', '/Bench/noop', {}, benchOutcome);
}
