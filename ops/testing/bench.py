"""`invoke bench`: no-op calls against full checkouts on this machine (rate, ratio,
latency, CPU per call), and the refusal phase: sold seats asked for again."""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO, TypeVar

from ops.base.environments import Endpoint, Environment
from ops.base.errors import NexusError
from ops.base.processes import ProcessInfo, free_port
from ops.clients.invocations import invocations_open
from ops.operations.audit import AuditReport, audit
from ops.release.stack import GATEWAY, Stack, asgi_spec
from ops.testing import charts, k6
from ops.testing.charts import Timeline, read_samples
from ops.testing.host_cpu import NOISY_STEAL_PCT, host_share_pct, measure_cpu
from ops.testing.load import LoadResult, audit_run
from ops.testing.runs import K6Run, drive, gateway_latency

BENCH = "bench-service"
Number = TypeVar("Number", int, float)


@dataclass
class BenchRound:
    """One skeleton phase and the checkout phase right after it."""

    saga: LoadResult
    saga_cpu: dict[str, float]
    full: LoadResult
    full_cpu: dict[str, float]
    left_open: int

    @property
    def checkout_of_saga(self) -> float:
        saga_rate = self.saga.summary.checkouts_per_s
        return self.full.summary.checkouts_per_s / saga_rate if saga_rate else 0.0

    def to_dict(self) -> dict[str, Any]:
        cpu = self.full_cpu
        return {
            "saga_per_s": round(self.saga.summary.checkouts_per_s, 1),
            "checkouts_per_s": round(self.full.summary.checkouts_per_s, 1),
            "checkout_of_saga": round(self.checkout_of_saga, 3),
            "checkout_p99_ms": round(self.full.summary.p99_ms, 1),
            "cpu_ms_per_checkout": round(cpu_ms_per_call(cpu, self.full.summary), 3),
            "steal_pct": host_share_pct(cpu.get("steal", 0.0), cpu.get("wall", 0.0)),
            "others_pct": host_share_pct(cpu.get("others", 0.0), cpu.get("wall", 0.0)),
        }


def bench(
    env: Environment,
    *,
    vus: int = 32,
    duration: str = "20s",
    rounds: int = 1,
    out: TextIO | None = None,
    chart: Path | None = None,
) -> dict[str, Any]:
    """No-op calls, then `rounds` pairs of the checkout's Restate skeleton and full
    checkouts on uncontended seats, all at the same load; rates, latencies and the CPU
    split of each phase. With several rounds the figures are the rounds' medians: a pair
    run back to back shares the host's weather, which on a shared machine moves rates by
    ±20% from one minute to the next. `chart` gets the last checkout phase's chart
    (answers and p99 per second), named in the figures as `chart`."""
    if rounds < 1:
        raise NexusError(f"--rounds must be at least 1, got {rounds}")
    stream = out or sys.stdout
    stack = Stack(env)
    server = stack.procs.info("restate-server")
    if env.runtime != "binary" or not server.alive or server.pid is None:
        raise NexusError(
            f"bench needs a deployed local stack: run `invoke deploy --env {env.name}` first"
        )
    pids = {"restate-server": server.pid}
    for name, info in (("service", service_process(stack)), ("gateway", stack.procs.info(GATEWAY))):
        if not info.alive or info.pid is None:
            raise NexusError(f"{name} is not running: run `invoke deploy --env {env.name}` first")
        pids[name] = info.pid
    endpoint = Endpoint(f"http://{env.service.host}:{free_port(env.service.host)}")
    spec = asgi_spec(
        BENCH,
        "ops.programs.bench_service:app",
        endpoint,
        env.root,
        sources=Path(__file__).resolve().parents[1] / "programs" / "bench_service.py",
    )
    with ExitStack() as undo:  # every step taken is undone, in reverse, even on failure
        undo.enter_context(gateway_latency(env, 0.0))
        undo.callback(stack.procs.stop, BENCH)
        bench_pid = stack.procs.start(spec)
        deployment = stack.admin.register(endpoint.url, force=False, dry_run=False)
        undo.callback(stack.admin.delete_deployment, str(deployment["id"]))
        _wait_routable(stack, 20.0)
        # The gateway idles here; it is measured so that every phase counts the same three.
        on_bench = {**pids, "service": bench_pid}

        def bench_phase(script: str) -> tuple[LoadResult, dict[str, float]]:
            """One phase against the bench-only service, with its CPU split."""
            run, cpu = measure_cpu(
                on_bench,
                lambda: drive(
                    env, vus=vus, duration=duration, script=script, ramp="0s", out=stream
                ),
            )
            return audit_run(env, _uninterrupted(run)), cpu

        def checkout_phase() -> tuple[LoadResult, dict[str, float], int]:
            # Only k6's run is measured: the audit's scan of every seat comes after.
            run, cpu = measure_cpu(
                pids,
                lambda: drive(
                    env,
                    vus=vus,
                    duration=duration,
                    script="checkout",
                    ramp="0s",
                    mix="success",
                    seat_mode="unique",
                    out=stream,
                    samples=chart is not None,
                ),
            )
            timelines.append(read_samples(run.samples_csv))
            left_open = invocations_open(stack.admin)
            return audit_run(env, _uninterrupted(run)), cpu, left_open

        timelines: list[Timeline | None] = []
        noop, noop_cpu = bench_phase("noop")
        done: list[BenchRound] = []
        for _ in range(rounds):
            saga, saga_cpu = bench_phase("saga")
            done.append(BenchRound(saga, saga_cpu, *checkout_phase()))
        refusals = refusal_phase(env, stack, pids, vus=vus, duration=duration, out=stream)
    figures = bench_figures(vus, duration, noop, noop_cpu, done, refusals)
    last = timelines[-1] if timelines else None
    if chart is not None and last is not None:
        title = f"bench: checkout phase {len(done)} of {rounds}, {vus} VUs, {duration}"
        figures["chart"] = str(charts.write(chart, title, last))
    return figures


def bench_figures(
    vus: int,
    duration: str,
    noop: LoadResult,
    noop_cpu: dict[str, float],
    rounds: Sequence[BenchRound],
    refusals: RefusalPhase | None = None,
) -> dict[str, Any]:
    """The bench's figures: the rounds' medians, with CPU, outcomes and audits summed over
    every round, and the refusal phase's when it ran."""
    noop_rate = noop.summary.checkouts_per_s
    saga_rate = statistics.median(r.saga.summary.checkouts_per_s for r in rounds)
    rate = statistics.median(r.full.summary.checkouts_per_s for r in rounds)
    saga_cpu = _summed(r.saga_cpu for r in rounds)
    full_cpu = _summed(r.full_cpu for r in rounds)
    noop_ms = cpu_ms_per_call(noop_cpu, noop.summary)
    saga_ms = cpu_ms_per_call(saga_cpu, *(r.saga.summary for r in rounds))
    checkout_ms = cpu_ms_per_call(full_cpu, *(r.full.summary for r in rounds))
    audit = AuditReport(
        checked=_summed(r.full.audit.checked for r in rounds),
        violations=[v for r in rounds for v in r.full.audit.violations],
        notes=[n for r in rounds for n in r.full.audit.notes],
    )
    problems = [
        f"{name}: {problem}"
        for name, result in [("no-op", noop)]
        + [(f"skeleton {n}", r.saga) for n, r in enumerate(rounds, 1)]
        + [(f"checkouts {n}", r.full) for n, r in enumerate(rounds, 1)]
        for problem in result.run_problems()
    ]
    problems += [f"checkouts audit: {v}" for v in audit.violations]
    refused = refusal_figures(refusals, noop_ms) if refusals is not None else {}
    problems += refusals.problems() if refusals is not None else []
    return {
        "ok": not problems,
        "problems": problems,
        "vus": vus,
        "duration": duration,
        "noop_per_s": round(noop_rate, 1),
        "noop_p99_ms": round(noop.summary.p99_ms, 1),
        "checkouts_per_s": round(rate, 1),
        "ratio": round(rate / noop_rate, 3) if noop_rate else 0.0,
        "saga_per_s": round(saga_rate, 1),
        "saga_ratio": round(saga_rate / noop_rate, 3) if noop_rate else 0.0,
        "checkout_of_saga": round(statistics.median(r.checkout_of_saga for r in rounds), 3),
        "checkout_p50_ms": round(statistics.median(r.full.summary.p50_ms for r in rounds), 1),
        "checkout_p99_ms": round(statistics.median(r.full.summary.p99_ms for r in rounds), 1),
        "checkout_outcomes": _summed(r.full.summary.outcomes for r in rounds),
        "audit": audit.to_dict(),
        "invocations_left_open": max(r.left_open for r in rounds),
        "rounds": [r.to_dict() for r in rounds],
        "cpu_noop_s": {k: round(v, 2) for k, v in noop_cpu.items()},
        "cpu_saga_s": {k: round(v, 2) for k, v in saga_cpu.items()},
        "cpu_checkout_s": {k: round(v, 2) for k, v in full_cpu.items()},
        # CPU of server + service + gateway per answered call, and a checkout's in no-op calls
        "cpu_ms_per_noop": round(noop_ms, 3),
        "cpu_ms_per_saga": round(saga_ms, 3),
        "cpu_ms_per_checkout": round(checkout_ms, 3),
        "saga_cost_noop_calls": round(saga_ms / noop_ms, 2) if noop_ms else 0.0,
        "checkout_cost_noop_calls": round(checkout_ms / noop_ms, 2) if noop_ms else 0.0,
        **refused,
    }


# --- the bench's refusal phase: sold seats asked for again ------------------------------

#: Seats the refusal phase sells before its load: a show's worth, as in a flash sale.
REFUSAL_SEATS = 200


@dataclass
class RefusalPhase:
    """The bench's last phase: every seat of a show sold, then the bench's users asking
    for those seats for the phase's duration; every answer should be a 409."""

    result: LoadResult
    cpu: dict[str, float]
    seats: int

    def problems(self) -> list[str]:
        summary = self.result.summary
        found = [f"refusals: {p}" for p in self.result.run_problems()]
        wrong = {k: n for k, n in summary.outcomes.items() if k != "sold_out" and n}
        if wrong:
            found.append(f"refusals: answers other than 409 for sold seats: {wrong}")
        found += [f"refusals audit: {v}" for v in self.result.audit.violations]
        return found


def sell_seats(stack: Stack, prefix: str, seats: int) -> None:
    """Sell seats 1..`seats` of `prefix` (one successful checkout each, eight at a time);
    a seat that is not sold fails the phase before it measures anything."""

    def buy(number: int) -> int:
        body = {
            "ticketId": f"{prefix}seat-{number}",
            "userId": f"bench-buyer-{number}",
            "paymentMethodId": "card_success",
        }
        return stack.ingress.call("Checkout", "process", body, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(buy, range(1, seats + 1)))
    unsold = [n for n, status in enumerate(statuses, 1) if status != 200]
    if unsold:
        raise NexusError(
            f"refusal phase: {len(unsold)} of {seats} seats were not sold"
            f" (first: {prefix}seat-{unsold[0]}, HTTP {statuses[unsold[0] - 1]})"
        )


def refusal_phase(
    env: Environment,
    stack: Stack,
    pids: dict[str, int],
    *,
    vus: int,
    duration: str,
    out: TextIO,
    seats: int = REFUSAL_SEATS,
) -> RefusalPhase:
    """Sell a show's seats (not measured), then measure `vus` looping buyers asking for
    random seats among them: the cost of telling a buyer no. The audit checks the show:
    every seat SOLD once, with one live charge."""
    run_id = k6.new_run_id()
    prefix = f"load-{run_id}:"  # the checkout script's seat ids for this run id
    sell_seats(stack, prefix, seats)
    run, cpu = measure_cpu(
        pids,
        lambda: drive(
            env,
            vus=vus,
            duration=duration,
            script="checkout",
            ramp="0s",
            mix="success",
            seats=seats,
            seat_mode="random",
            out=out,
            run_id=run_id,
        ),
    )
    _uninterrupted(run)
    report = audit(env, prefix=prefix)
    if report.checked.get("sold") != seats:
        report.violations.append(
            f"{report.checked.get('sold')} seats of the refusal phase SOLD, {seats} were sold"
        )
    return RefusalPhase(LoadResult(run.summary, report, run_id), cpu, seats)


def refusal_figures(phase: RefusalPhase, noop_ms: float) -> dict[str, Any]:
    """The refusal phase's figures for the bench's JSON; `refusal_cost_noop_calls` is a
    refusal's CPU (server + service + gateway) over a no-op call's, as for checkouts."""
    summary, cpu = phase.result.summary, phase.cpu
    refusal_ms = cpu_ms_per_call(cpu, summary)
    return {
        "refusal_seats": phase.seats,
        "refusals_per_s": round(summary.checkouts_per_s, 1),
        "refusal_p50_ms": round(summary.p50_ms, 1),
        "refusal_p99_ms": round(summary.p99_ms, 1),
        "refusal_outcomes": dict(summary.outcomes),
        "refusal_audit": phase.result.audit.to_dict(),
        "refusal_steal_pct": host_share_pct(cpu.get("steal", 0.0), cpu.get("wall", 0.0)),
        "refusal_others_pct": host_share_pct(cpu.get("others", 0.0), cpu.get("wall", 0.0)),
        "cpu_refusal_s": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_ms_per_refusal": round(refusal_ms, 3),
        "refusal_cost_noop_calls": round(refusal_ms / noop_ms, 2) if noop_ms else 0.0,
    }


def refusal_lines(result: Mapping[str, Any]) -> list[str]:
    """The bench summary's lines on the refusal phase (none when it did not run)."""
    if "refusals_per_s" not in result:
        return []
    return [
        f"refusals         {result['refusals_per_s']:>8.1f}/s   p50"
        f" {result['refusal_p50_ms']:.1f} ms   p99 {result['refusal_p99_ms']:.1f} ms"
        f"   ({result['refusal_seats']} seats sold, the same users asking for them)",
        f"refusal cost     {result['refusal_cost_noop_calls']:>8.2f}     no-op calls of CPU"
        f"   ({result['cpu_ms_per_refusal']:.2f} ms; steal {result['refusal_steal_pct']:.1f}%,"
        f" others {result['refusal_others_pct']:.1f}%)",
    ]


def _summed(counts: Iterable[Mapping[str, Number]]) -> dict[str, Number]:
    """Key by key sums, every key kept (a Counter's `+` would drop zeros)."""
    total: dict[str, Number] = {}
    for count in counts:
        for key, value in count.items():
            total[key] = total[key] + value if key in total else value
    return total


#: The processes whose CPU a call costs (k6, the load's driver, is left out).
SYSTEM_UNDER_TEST = ("restate-server", "service", "gateway")


def service_process(stack: Stack) -> ProcessInfo:
    """The service process that serves the checkouts now (whose CPU the bench counts):
    the active version's instance."""
    return stack.procs.info(stack.service_instance().name)


def cpu_ms_per_call(cpu: dict[str, float], *summaries: k6.LoadSummary) -> float:
    """Milliseconds of CPU that restate-server, service and gateway spent per answer
    (`cpu` summed over the runs of `summaries`, their answers likewise)."""
    answers = sum(sum(summary.outcomes.values()) for summary in summaries)
    spent = sum(cpu.get(name, 0.0) for name in SYSTEM_UNDER_TEST)
    return 1000.0 * spent / answers if answers else 0.0


def _uninterrupted(run: K6Run) -> K6Run:
    """The run, unless Ctrl-C cut it short: then the bench stops (and undoes its setup)."""
    if run.summary.interrupted:
        raise KeyboardInterrupt
    return run


def _wait_routable(stack: Stack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stack.ingress.call("Bench", "noop", {}).status_code == 200:
            return
        time.sleep(0.2)
    raise NexusError("the bench service never answered through the ingress")


def bench_lines(result: dict[str, Any]) -> list[str]:
    """The human summary of a bench run."""
    lines = [
        f"no-op calls      {result['noop_per_s']:>8.1f}/s   p99 {result['noop_p99_ms']:.1f} ms",
        # the floor: a checkout's Restate calls without our code
        f"saga skeleton    {result['saga_per_s']:>8.1f}/s   ratio {result['saga_ratio']:.3f}"
        f"   (checkouts reach {result['checkout_of_saga']:.0%} of it)",
        f"checkouts        {result['checkouts_per_s']:>8.1f}/s"
        f"   p50 {result['checkout_p50_ms']:.1f} ms   p99 {result['checkout_p99_ms']:.1f} ms",
        f"ratio            {result['ratio']:>8.3f}     (targets: checkouts >= 85% of the"
        " skeleton, p99 <= 250 ms)",
    ]
    if "checkout_cost_noop_calls" in result:  # CPU per call: steadier than rates when shared
        lines.append(
            f"CPU per call     no-op {result['cpu_ms_per_noop']:.2f} ms, skeleton"
            f" {result['cpu_ms_per_saga']:.2f} ms, checkout {result['cpu_ms_per_checkout']:.2f} ms"
            " (server + service + gateway)"
        )
        lines.append(
            f"checkout cost    {result['checkout_cost_noop_calls']:>8.2f}     no-op calls of CPU"
            f"   (skeleton {result['saga_cost_noop_calls']:.2f})"
        )
    if "invocations_left_open" in result:  # work deferred past the window flatters a rate
        lines.append(f"left open        {result['invocations_left_open']:>8d}     invocations")
    rounds = result.get("rounds", [])
    if len(rounds) > 1:  # the figures above are these rounds' medians
        for n, r in enumerate(rounds, 1):
            lines.append(
                f"round {n:<10} skeleton {r['saga_per_s']:.1f}/s, checkouts"
                f" {r['checkouts_per_s']:.1f}/s ({r['checkout_of_saga']:.0%}),"
                f" p99 {r['checkout_p99_ms']:.0f} ms, steal {r['steal_pct']:.1f}%,"
                f" others {r['others_pct']:.1f}%"
                + (" (high steal)" if r["steal_pct"] >= NOISY_STEAL_PCT else "")
            )
    lines += refusal_lines(result)
    for phase in ("cpu_noop_s", "cpu_saga_s", "cpu_checkout_s", "cpu_refusal_s"):
        if phase not in result:
            continue
        cpu = result[phase]
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in cpu.items())
        lines.append(f"{phase:<16} {parts}")
    if "chart" in result:
        lines.append(f"chart            {result['chart']}")
    lines += [f"NOT VALID        {problem}" for problem in result.get("problems", [])]
    return lines
