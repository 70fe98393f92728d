// Nexus hot seat: NEXUS_VUS users try to buy ONE seat (${NEXUS_EVENT}-${RUN_ID}:hot) at once,
// each exactly one checkout with card_success. Correct behaviour: at most one confirmed, the
// rest sold_out. Same env variables, classification, counters and summary as checkout.js
// (NEXUS_DURATION is the maximum duration; NEXUS_RAMP, NEXUS_SEATS, NEXUS_MIX and
// NEXUS_SEAT_MODE do not apply).
import http from 'k6/http';
import {
  CONFIG,
  SUMMARY_TREND_STATS,
  eventId,
  post,
  resolveRunId,
  thresholds,
  userId,
} from './lib/outcomes.js';

export { handleSummary } from './lib/outcomes.js';

http.setResponseCallback(http.expectedStatuses(200, 402, 409, 502, 503));

export const options = {
  scenarios: {
    hot_seat: {
      executor: 'per-vu-iterations',
      vus: CONFIG.vus,
      iterations: 1,
      maxDuration: CONFIG.duration,
      gracefulStop: '10s',
    },
  },
  thresholds: thresholds({
    outcome_unexpected: ['count==0'],
    // more than one confirmed booking of a single seat is an oversell
    outcome_confirmed: ['count<=1'],
  }),
  summaryTrendStats: SUMMARY_TREND_STATS,
};

export function setup() {
  const runId = resolveRunId();
  console.log(`hot-seat run ${runId}: ${CONFIG.vus} users on ${eventId(runId)}:hot`);
  return { runId };
}

export default function (data) {
  post('checkout', '/Checkout/process', {
    ticketId: `${eventId(data.runId)}:hot`,
    userId: userId(data.runId),
    paymentMethodId: 'card_success',
  });
}
