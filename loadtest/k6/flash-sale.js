// Nexus flash sale: a sale opens, buyers arrive at NEXUS_RATE per second for NEXUS_DURATION
// (open model: they keep arriving whether or not earlier buyers were answered) for
// NEXUS_SEATS seats, each buyer one checkout with a payment method drawn from NEXUS_MIX.
//
// Buyer n (n counts arrivals over the whole test, across VUs) wants seat (n mod NEXUS_SEATS)
// + 1: the first NEXUS_SEATS buyers each go for a different seat, and every later wave of
// NEXUS_SEATS buyers comes back over the same seats, so a seat freed by a declined or failed
// payment is taken by the next buyer who wants it, and each seat draws about
// rate x duration / seats buyers. Random picks would leave the last few seats to chance
// (coupon collecting) and make the sell-out time a measure of luck, not of the system.
//
// Besides the counters and trends of lib/outcomes.js (checkout_duration_confirmed for
// winners, checkout_duration_sold_out for refused buyers), two gauges time the sale, in ms
// since the scenario started: sale_first_request_ms (its min: the first request) and
// sale_last_sold_ms (its max: the answer to the last winner). ops/testing/flash_sale.py turns them into
// sellout_s. Default thresholds: no unexpected answer, and no more confirmed bookings than
// seats (an oversell seen by k6 itself); NEXUS_THRESHOLDS adds the user's.
import exec from 'k6/execution';
import http from 'k6/http';
import { Gauge } from 'k6/metrics';
import {
  CONFIG,
  SUMMARY_TREND_STATS,
  eventId,
  loadScenario,
  pickPayment,
  post,
  resolveRunId,
  thresholds,
} from './lib/outcomes.js';

export { handleSummary } from './lib/outcomes.js';

if (CONFIG.rate === null) {
  throw new Error('NEXUS_RATE is required: buyers arriving per second');
}

http.setResponseCallback(http.expectedStatuses(200, 402, 409, 502, 503));

export const options = {
  scenarios: { flash_sale: loadScenario(CONFIG.ramp) },
  thresholds: thresholds({
    outcome_unexpected: ['count==0'],
    outcome_confirmed: [`count<=${CONFIG.seats}`],
  }),
  summaryTrendStats: SUMMARY_TREND_STATS,
};

const firstRequest = new Gauge('sale_first_request_ms');
const lastSold = new Gauge('sale_last_sold_ms');

export function setup() {
  const runId = resolveRunId();
  console.log(
    `flash sale ${eventId(runId)}: ${CONFIG.seats} seats, ${CONFIG.rate} buyers/s for ${CONFIG.duration}` +
      ` (up to ${CONFIG.vus} VUs), mix ${CONFIG.mix}`,
  );
  return { runId };
}

export default function (data) {
  const buyer = exec.scenario.iterationInTest;
  const opened = exec.scenario.startTime;
  firstRequest.add(Date.now() - opened);
  const outcome = post('checkout', '/Checkout/process', {
    ticketId: `${eventId(data.runId)}:seat-${(buyer % CONFIG.seats) + 1}`,
    userId: `buyer-${data.runId}-${buyer}`,
    paymentMethodId: pickPayment(),
  });
  if (outcome === 'confirmed') {
    lastSold.add(Date.now() - opened);
  }
}
