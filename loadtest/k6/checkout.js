// Nexus checkout load: ramp up / hold / ramp down of POST {base}/Checkout/process, either
// NEXUS_VUS looping users (closed model) or, with NEXUS_RATE, that many arrivals per second
// from at most NEXUS_VUS users (open model; see loadScenario in lib/outcomes.js).
//
// Configured only by environment variables (see lib/outcomes.js): NEXUS_BASE_URLS (required),
// NEXUS_TOKEN, NEXUS_VUS, NEXUS_RATE, NEXUS_DURATION, NEXUS_RAMP, NEXUS_SEATS, NEXUS_RUN_ID,
// NEXUS_EVENT, NEXUS_MIX, NEXUS_SEAT_MODE, NEXUS_THRESHOLDS, NEXUS_SUMMARY_FILE.
//
// Summary mechanism: handleSummary() (shared, lib/outcomes.js) writes k6's whole summary
// object as JSON to the path in NEXUS_SUMMARY_FILE and prints a short text summary on stdout.
// Chosen over --summary-export because that legacy export carries no test run duration
// (needed for checkouts/s) and reports thresholds as inverted booleans (true = crossed);
// the handleSummary object has state.testRunDurationMs and thresholds[expr].ok.
// ops/testing/k6.py parses that JSON.
//
// Every answer is classified (200 confirmed, 409 sold_out, 402 declined, 502/503 with
// "Gateway timeout" gateway_error, anything else unexpected) into the counters
// outcome_<outcome> and the trend checkout_duration (ms, tagged with outcome).
// Business refusals are expected statuses, so they are not counted as http_req_failed.
import http from 'k6/http';
import {
  CONFIG,
  SUMMARY_TREND_STATS,
  loadScenario,
  pickPayment,
  pickTicket,
  post,
  resolveRunId,
  thresholds,
  userId,
} from './lib/outcomes.js';

export { handleSummary } from './lib/outcomes.js';

http.setResponseCallback(http.expectedStatuses(200, 402, 409, 502, 503));

export const options = {
  scenarios: { checkout: loadScenario(CONFIG.ramp) },
  thresholds: thresholds({ outcome_unexpected: ['count==0'] }),
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  const runId = resolveRunId();
  const load = CONFIG.rate === null ? `${CONFIG.vus} VUs` : `${CONFIG.rate}/s from up to ${CONFIG.vus} VUs`;
  console.log(`checkout run ${runId}: ${load}, seats ${CONFIG.seats} (${CONFIG.seatMode}), mix ${CONFIG.mix}`);
  return { runId };
}

export default function (data) {
  post('checkout', '/Checkout/process', {
    ticketId: pickTicket(data.runId),
    userId: userId(data.runId),
    paymentMethodId: pickPayment(),
  });
}
