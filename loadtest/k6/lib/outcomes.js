// Shared pieces of the Nexus k6 scripts: configuration from NEXUS_* environment variables,
// request helpers, the outcome classification rule and the machine-readable summary.
// Local module only (no remote imports). Mirrors ops/testing/k6.py: keep classify() in step with it.
import { sleep } from 'k6';
import http from 'k6/http';
import { Counter, Trend } from 'k6/metrics';

export const OUTCOMES = ['confirmed', 'sold_out', 'declined', 'gateway_error', 'unexpected'];

// Trend stats that land in the summary JSON; ops/testing/k6.py reads p(50), p(95) and p(99).
export const SUMMARY_TREND_STATS = ['avg', 'min', 'med', 'max', 'p(50)', 'p(90)', 'p(95)', 'p(99)', 'count'];

const MIXES = {
  // cumulative weights: [paymentMethodId, upper bound]
  default: [['card_success', 0.8], ['card_decline', 0.9], ['card_error', 1.0]],
  success: [['card_success', 1.0]],
};
const SEAT_MODES = ['random', 'unique'];

function env(name, fallback) {
  const value = __ENV[name];
  return value === undefined || value === '' ? fallback : value;
}

function positiveInt(name, fallback) {
  const raw = env(name, String(fallback));
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`${name} must be a positive integer, got ${JSON.stringify(raw)}`);
  }
  return value;
}

function duration(name, fallback) {
  const raw = env(name, fallback).trim();
  if (!/^0$|^(\d+(\.\d+)?(ms|s|m|h))+$/.test(raw)) {
    throw new Error(`${name} must be a k6 duration such as 30s or 1m30s, got ${JSON.stringify(raw)}`);
  }
  return raw;
}

function optionalPositiveInt(name) {
  return env(name, '') === '' ? null : positiveInt(name, 1);
}

function choice(name, fallback, allowed) {
  const value = env(name, fallback);
  if (!allowed.includes(value)) {
    throw new Error(`${name} must be one of ${allowed.join(', ')}, got ${JSON.stringify(value)}`);
  }
  return value;
}

/**
 * The thresholds of a script: its own defaults plus the user's from NEXUS_THRESHOLDS
 * (JSON {metric: [expression, ...]}, built by ops/testing/k6.py), all checked by k6 itself.
 */
export function thresholds(defaults) {
  const merged = {};
  for (const [metric, expressions] of Object.entries(defaults)) {
    merged[metric] = [...expressions];
  }
  const raw = env('NEXUS_THRESHOLDS', '');
  if (raw === '') {
    return merged;
  }
  let user;
  try {
    user = JSON.parse(raw);
  } catch (error) {
    throw new Error(`NEXUS_THRESHOLDS must be JSON {metric: [expression]}, got ${JSON.stringify(raw)}`);
  }
  for (const [metric, expressions] of Object.entries(user)) {
    if (!Array.isArray(expressions) || !expressions.every((e) => typeof e === 'string')) {
      throw new Error(`NEXUS_THRESHOLDS: ${metric} must map to a list of expressions`);
    }
    const existing = merged[metric] || [];
    merged[metric] = existing.concat(expressions.filter((e) => !existing.includes(e)));
  }
  return merged;
}

/**
 * The load scenario of checkout-like scripts. With NEXUS_RATE: an open model, NEXUS_RATE
 * iterations started per second whether or not earlier ones were answered
 * (constant-arrival-rate, or ramping-arrival-rate with a ramp), from NEXUS_VUS
 * pre-allocated VUs (also the ceiling: an arrival with no free VU is a dropped iteration).
 * Without it: NEXUS_VUS looping VUs (ramping-vus, a closed model).
 */
export function loadScenario(ramp) {
  const noRamp = isZeroDuration(ramp);
  if (CONFIG.rate !== null) {
    const common = { timeUnit: '1s', preAllocatedVUs: CONFIG.vus, maxVUs: CONFIG.vus, gracefulStop: '10s' };
    if (noRamp) {
      return { executor: 'constant-arrival-rate', rate: CONFIG.rate, duration: CONFIG.duration, ...common };
    }
    return {
      executor: 'ramping-arrival-rate',
      startRate: 0,
      stages: [
        { duration: ramp, target: CONFIG.rate },
        { duration: CONFIG.duration, target: CONFIG.rate },
        { duration: ramp, target: 0 },
      ],
      ...common,
    };
  }
  return {
    executor: 'ramping-vus',
    startVUs: noRamp ? CONFIG.vus : 0,
    stages: noRamp
      ? [{ duration: CONFIG.duration, target: CONFIG.vus }]
      : [
          { duration: ramp, target: CONFIG.vus },
          { duration: CONFIG.duration, target: CONFIG.vus },
          { duration: ramp, target: 0 },
        ],
    gracefulRampDown: '10s',
    gracefulStop: '10s',
  };
}

/** True for "0", "0s", "0m0s", "0.0ms": a ramp that means "no ramp stages". */
export function isZeroDuration(text) {
  return text.match(/\d+(\.\d+)?/g).every((n) => parseFloat(n) === 0);
}

function baseUrls() {
  const urls = env('NEXUS_BASE_URLS', '')
    .split(',')
    .map((u) => u.trim().replace(/\/+$/, ''))
    .filter((u) => u !== '');
  if (urls.length === 0) {
    throw new Error('NEXUS_BASE_URLS is required (comma-separated Restate ingress URLs)');
  }
  return urls;
}

// Parsed once per VU in the init context; a bad value fails the run before any request.
export const CONFIG = {
  baseUrls: baseUrls(),
  vus: positiveInt('NEXUS_VUS', 10),
  duration: duration('NEXUS_DURATION', '30s'),
  ramp: duration('NEXUS_RAMP', '5s'),
  seats: positiveInt('NEXUS_SEATS', 100),
  event: env('NEXUS_EVENT', 'load'),
  mix: choice('NEXUS_MIX', 'default', Object.keys(MIXES)),
  seatMode: choice('NEXUS_SEAT_MODE', 'random', SEAT_MODES),
  // arrivals per second (open model); null: looping VUs (closed model)
  rate: optionalPositiveInt('NEXUS_RATE'),
};
if (CONFIG.event.includes(':')) {
  throw new Error('NEXUS_EVENT must not contain ":" (ticket ids are event:seat)');
}

const TOKEN = env('NEXUS_TOKEN', '');
const HEADERS = TOKEN
  ? { 'Content-Type': 'application/json', Authorization: `Bearer ${TOKEN}` }
  : { 'Content-Type': 'application/json' };

/**
 * The run id, decided once for the whole test. Every VU runs the init context on its own, so a
 * timestamp taken there would differ between VUs; call this from setup() and hand it to the
 * iterations through setup's return value.
 */
export function resolveRunId() {
  const runId = env('NEXUS_RUN_ID', new Date().toISOString().replace(/[-:.]/g, ''));
  if (runId.includes(':')) {
    throw new Error('NEXUS_RUN_ID must not contain ":" (ticket ids are event:seat)');
  }
  return runId;
}

/** Event part of every ticket id of this run. */
export function eventId(runId) {
  return `${CONFIG.event}-${runId}`;
}

/** Ticket id for this iteration according to NEXUS_SEAT_MODE. */
export function pickTicket(runId) {
  const seat = CONFIG.seatMode === 'unique'
    ? `${__VU}-${__ITER}`
    : String(1 + Math.floor(Math.random() * CONFIG.seats));
  return `${eventId(runId)}:seat-${seat}`;
}

/** Payment method drawn from NEXUS_MIX. */
export function pickPayment() {
  const draw = Math.random();
  const mix = MIXES[CONFIG.mix];
  for (const [method, upper] of mix) {
    if (draw < upper) {
      return method;
    }
  }
  return mix[mix.length - 1][0];
}

/** User id unique per run, VU and iteration. */
export function userId(runId) {
  return `user-${runId}-${__VU}-${__ITER}`;
}

/** Round-robin over NEXUS_BASE_URLS. */
export function baseUrl() {
  return CONFIG.baseUrls[(__VU + __ITER) % CONFIG.baseUrls.length];
}

/** Twin of ops.testing.k6.classify: the business outcome of one checkout answer. */
export function classify(status, body) {
  const text = typeof body === 'string' ? body : '';
  switch (status) {
    case 200:
      return 'confirmed';
    case 409:
      return 'sold_out';
    case 402:
      return 'declined';
    case 502:
    case 503:
      return text.includes('Gateway timeout') ? 'gateway_error' : 'unexpected';
    default:
      return 'unexpected';
  }
}

/** Options of a bench phase (noop.js, saga.js): NEXUS_VUS constant VUs for NEXUS_DURATION,
 * no ramp, and any unexpected answer fails the run. */
export function benchOptions(scenario) {
  return {
    scenarios: {
      [scenario]: {
        executor: 'constant-vus',
        vus: CONFIG.vus,
        duration: CONFIG.duration,
        gracefulStop: '10s',
      },
    },
    thresholds: thresholds({ outcome_unexpected: ['count==0'] }),
    summaryTrendStats: SUMMARY_TREND_STATS,
  };
}

/** A bench answer: 200 counts as confirmed, anything else as unexpected. */
export function benchOutcome(status) {
  return status === 200 ? 'confirmed' : 'unexpected';
}

const counters = {};
for (const outcome of OUTCOMES) {
  counters[outcome] = new Counter(`outcome_${outcome}`);
}
const checkoutDuration = new Trend('checkout_duration', true);
// The same durations split by outcome (checkout_duration_confirmed...): winners and refused
// buyers have their own percentiles in the summary, and their own thresholds.
const outcomeDurations = {};
for (const outcome of OUTCOMES) {
  outcomeDurations[outcome] = new Trend(`checkout_duration_${outcome}`, true);
}

// Debug output for unexpected answers, bounded for the whole run: only VUs 1..5 print, and
// each prints its first unexpected answer only (VUs share no memory, so no global counter).
const WARN_VUS = 5;
let warned = false;

function warnUnexpected(name, res) {
  if (warned || __VU > WARN_VUS) {
    return;
  }
  warned = true;
  const body = typeof res.body === 'string' ? res.body.slice(0, 200) : '';
  const error = res.error ? ` error=${JSON.stringify(res.error)}` : '';
  console.warn(`unexpected ${name} answer: status=${res.status}${error} body=${JSON.stringify(body)}`);
}

// Pause after a network error (status 0): the target is unreachable, and k6 itself logs a
// "Request Failed" line per failed request, thousands per second in a tight loop.
const NETWORK_ERROR_BACKOFF_S = 1;

/**
 * POST a JSON body and record the outcome counters and the duration trend.
 * The outcome is only known after the answer, so it tags the custom metrics; the built-in
 * http_* samples carry name (fixed at send time) and k6's own status/expected_response.
 */
export function post(name, path, payload, classifier = classify) {
  const res = http.post(`${baseUrl()}${path}`, JSON.stringify(payload), {
    headers: HEADERS,
    tags: { name },
  });
  const outcome = classifier(res.status, res.body);
  const tags = { name, outcome };
  counters[outcome].add(1, tags);
  checkoutDuration.add(res.timings.duration, tags);
  outcomeDurations[outcome].add(res.timings.duration, tags);
  if (outcome === 'unexpected') {
    warnUnexpected(name, res);
  }
  if (res.status === 0) {
    sleep(NETWORK_ERROR_BACKOFF_S);
  }
  return outcome;
}

function fmtMs(value) {
  return value === undefined ? '-' : `${value.toFixed(1)}ms`;
}

function textSummary(data) {
  const metrics = data.metrics;
  const seconds = data.state.testRunDurationMs / 1000;
  const lines = ['', 'nexus summary'];
  let total = 0;
  for (const outcome of OUTCOMES) {
    const metric = metrics[`outcome_${outcome}`];
    const count = metric ? metric.values.count : 0;
    total += count;
    lines.push(`  ${outcome.padEnd(16)} ${String(count).padStart(10)}`);
  }
  const rate = seconds > 0 ? total / seconds : 0;
  lines.push(`  ${'answers/s'.padEnd(16)} ${rate.toFixed(1).padStart(10)}`);
  const trend = metrics.checkout_duration ? metrics.checkout_duration.values : {};
  for (const stat of ['p(50)', 'p(95)', 'p(99)']) {
    lines.push(`  ${stat.padEnd(16)} ${fmtMs(trend[stat]).padStart(10)}`);
  }
  for (const [label, outcome] of [['winners', 'confirmed'], ['refused', 'sold_out']]) {
    const values = metrics[`checkout_duration_${outcome}`];
    if (values) {
      const text = `${fmtMs(values.values['p(50)'])} / ${fmtMs(values.values['p(99)'])}`;
      lines.push(`  ${`${label} p50/p99`.padEnd(16)} ${text.padStart(10)}`);
    }
  }
  const dropped = metrics.dropped_iterations ? metrics.dropped_iterations.values.count : 0;
  lines.push(`  ${'dropped iters'.padEnd(16)} ${String(dropped).padStart(10)}`);
  lines.push(`  ${'duration'.padEnd(16)} ${`${seconds.toFixed(1)}s`.padStart(10)}`);
  for (const [name, metric] of Object.entries(metrics)) {
    for (const [expr, result] of Object.entries(metric.thresholds || {})) {
      lines.push(`  threshold ${result.ok ? 'ok     ' : 'CROSSED'} ${name} ${expr}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/**
 * End-of-test hook shared by all scripts: the full summary object as JSON to the file named
 * by NEXUS_SUMMARY_FILE (when set) and a short text summary on stdout.
 */
export function handleSummary(data) {
  const out = { stdout: textSummary(data) };
  const file = env('NEXUS_SUMMARY_FILE', '');
  if (file) {
    out[file] = JSON.stringify(data, null, 2);
  }
  return out;
}
