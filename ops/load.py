"""`invoke load` and `invoke bench`: k6 runs against an environment, each followed by
the audit of what it booked; `--script flash-sale` adds the sale's own figures and checks."""

from __future__ import annotations

import csv
import json
import math
import os
import resource
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar

from ops import k6
from ops.admin import AdminClient, GatewayClient
from ops.audit import AuditReport, audit, read_charges, read_tickets
from ops.environments import Endpoint, Environment
from ops.errors import NexusError
from ops.invocations import invocations_open
from ops.processes import PGRP, UTIME, ProcessInfo, free_port, proc_stats
from ops.stack import GATEWAY, Stack, asgi_spec
from service.models import TicketStatus

SCRIPTS = Path(__file__).resolve().parent.parent / "loadtest" / "k6"
# Scripts against the bench-only service: no seats of their own to audit.
BENCH_SCRIPTS = ("noop", "saga")
FLASH_SALE = "flash-sale"
# Scripts that need an arrival rate (--rate): the open model is what they measure.
RATE_SCRIPTS = (FLASH_SALE,)
# Scripts with a fixed executor of their own, which an arrival rate would not change.
NO_RATE_SCRIPTS = ("hot-seat", *BENCH_SCRIPTS)


def script_path(name: str) -> Path:
    """`checkout`, `hot-seat`, `noop` or a path to a .js file."""
    path = Path(name) if name.endswith(".js") else SCRIPTS / f"{name}.js"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SCRIPTS.glob("*.js")))
        raise NexusError(f"no k6 script {name!r} (known: {known})")
    return path


@dataclass
class FlashSale:
    """What a flash sale offered, and how its seats went (from k6's summary)."""

    seats: int
    rate: int
    duration: str
    sold: int  # winners: confirmed answers
    sellout_s: float | None  # first request to the last winner's answer; None: not sold out
    winners: dict[str, float] = field(default_factory=dict)  # count, p50_ms, p99_ms
    refused: dict[str, float] = field(default_factory=dict)
    # the refused buyers apart: those who arrived before the last winner's answer, and after
    refused_before_sellout: dict[str, float] = field(default_factory=dict)
    refused_after_sellout: dict[str, float] = field(default_factory=dict)

    @property
    def sold_out(self) -> bool:
        return self.sold >= self.seats

    def to_dict(self) -> dict[str, Any]:
        return {
            "seats": self.seats,
            "rate": self.rate,
            "sale_duration": self.duration,
            "sold": self.sold,
            "sold_out": self.sold_out,
            "sellout_s": self.sellout_s,
            "winners": dict(self.winners),
            "refused": dict(self.refused),
            "refused_before_sellout": dict(self.refused_before_sellout),
            "refused_after_sellout": dict(self.refused_after_sellout),
        }

    def lines(self) -> list[str]:
        def latency(group: dict[str, float]) -> str:
            if not group.get("count"):
                return "none"
            count = f"{group['count']:.0f}"
            return f"p50 {group['p50_ms']:.1f} ms   p99 {group['p99_ms']:.1f} ms   ({count})"

        sellout = (
            f"sold out in {self.sellout_s:.2f} s" if self.sellout_s is not None else "NOT sold out"
        )
        return [
            f"flash sale       {self.seats} seats, {self.rate} buyers/s for {self.duration}",
            f"sold             {self.sold} of {self.seats}   {sellout}",
            f"winners (200)    {latency(self.winners)}",
            f"refused (409)    {latency(self.refused)}",
            f"  before sellout {latency(self.refused_before_sellout)}",
            f"  after sellout  {latency(self.refused_after_sellout)}",
        ]


@dataclass
class LoadResult:
    summary: k6.LoadSummary
    audit: AuditReport
    run_id: str
    sale: FlashSale | None = None
    host_steal_pct: float = 0.0  # CPU time the hypervisor took while k6 ran

    @property
    def ok(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        """Why the run failed, one line per reason; empty when it passed."""
        found = self.run_problems()
        if self.sale is not None and not self.sale.sold_out and not self.summary.interrupted:
            found.append(
                f"not sold out: {self.sale.sold} of {self.sale.seats} seats sold in"
                f" {self.sale.duration} (run longer, or at a higher rate)"
            )
        if not self.audit.ok:
            found.append(f"audit: {len(self.audit.violations)} violation(s)")
        return found

    def run_problems(self) -> list[str]:
        """What went wrong in k6's run itself, leaving the audit aside."""
        found = []
        if self.summary.outcomes["unexpected"]:
            found.append(f"{self.summary.outcomes['unexpected']} unexpected answers")
        if self.summary.exit_code or not self.summary.thresholds_ok:
            crossed = self.summary.crossed
            named = f": threshold crossed: {', '.join(crossed)}" if crossed else ""
            found.append(f"k6 {self.summary.exit_text}{named}")
        return found

    def to_dict(self) -> dict[str, Any]:
        sale = self.sale.to_dict() if self.sale is not None else {}
        return {
            **self.summary.to_dict(),
            **sale,
            "run_id": self.run_id,
            "host_steal_pct": self.host_steal_pct,
            "audit": self.audit.to_dict(),
        }


@dataclass
class K6Run:
    """What one k6 run reports, and the prefix of the seats it booked."""

    script: str
    summary: k6.LoadSummary
    run_id: str
    prefix: str
    seats: int = 0
    rate: int | None = None
    duration: str = ""
    host_steal_pct: float = 0.0  # of the host's CPU time while k6 ran
    samples_csv: Path | None = None  # k6's samples (flash sale), read once, then removed


def drive(
    env: Environment,
    *,
    vus: int,
    duration: str,
    script: str = "checkout",
    seats: int = 100,
    ramp: str = "2s",
    mix: str = "default",
    seat_mode: str = "random",
    report_html: Path | None = None,
    out: TextIO | None = None,
    rate: int | None = None,
    thresholds: Sequence[str] = (),
    k6_path: str | None = None,
    k6_outputs: Sequence[str] = (),
    run_id: str | None = None,
) -> K6Run:
    """One k6 run through the environment's ingress (no audit). `rate` makes it an open
    model (arrivals per second, `vus` the most in flight); `thresholds` (k6 syntax) are
    checked by k6; `k6_path` picks the k6 (else $NEXUS_K6, else the wheel's);
    `k6_outputs` are passed to k6 as `--out`; `run_id` names the seats of an earlier run
    (the bench's refusal phase asks for seats it sold), else the run gets a new one."""
    stream = out or sys.stdout
    run_id = run_id or k6.new_run_id()
    event = "bench" if script in BENCH_SCRIPTS else "sale" if script == FLASH_SALE else "load"
    if script in RATE_SCRIPTS and rate is None:
        raise NexusError(f"the {script} script needs --rate (buyers arriving per second)")
    if script in NO_RATE_SCRIPTS and rate is not None:
        raise NexusError(f"the {script} script runs its own fixed users: --rate does not apply")
    try:
        binary = k6.k6_binary(k6_path)
        outputs = [k6.parse_output(spec) for spec in k6_outputs]
        params = k6.LoadParams(
            base_urls=env.ingress_urls,
            vus=vus,
            duration=duration,
            ramp=ramp,
            seats=seats,
            run_id=run_id,
            mix=mix,
            seat_mode=seat_mode,
            event=event,
            rate=rate,
            thresholds=tuple(k6.parse_threshold(text) for text in thresholds),
            samples_csv=sale_samples_file(env, run_id) if script == FLASH_SALE else None,
        )
    except ValueError as exc:
        raise NexusError(f"bad load parameters: {exc}") from None
    except k6.K6NotFound as exc:
        raise NexusError(str(exc)) from None
    summary_file = env.state_dir / "load" / f"k6-summary-{run_id}.json"
    model = f"{vus} VUs" if rate is None else f"{rate} arrivals/s (at most {vus} VUs)"
    print(
        f"load {env.name}: {script} with {model} for {duration} on"
        f" {', '.join(params.base_urls)} (k6 {binary}, testid={run_id})",
        file=stream,
        flush=True,
    )
    _, stolen_before = host_cpu_seconds()
    started = time.monotonic()
    try:
        summary = k6.run_k6(
            script_path(script),
            params,
            env.token,
            summary_file,
            report_html,
            out=stream,
            binary=binary,
            outputs=outputs,
        )
    except (k6.K6Failed, k6.K6NotFound) as exc:
        raise NexusError(f"k6 failed: {exc}") from None
    stolen = host_cpu_seconds()[1] - stolen_before
    return K6Run(
        script,
        summary,
        run_id,
        prefix=f"{event}-{run_id}:",
        seats=seats,
        rate=rate,
        duration=duration,
        host_steal_pct=host_share_pct(stolen, time.monotonic() - started),
        samples_csv=params.samples_csv,
    )


@contextmanager
def gateway_latency(env: Environment, latency_ms: float | None) -> Iterator[None]:
    """The mock gateway answering each charge after `latency_ms` while the block runs, and
    its own latency back afterwards, even on failure. None leaves the gateway alone."""
    if latency_ms is None:
        yield
        return
    if not (math.isfinite(latency_ms) and latency_ms >= 0):
        raise NexusError(f"gateway latency must be a number of milliseconds >= 0, not {latency_ms}")
    if env.gateway_mode != "mock":
        raise NexusError(
            f"a gateway latency needs the mock gateway; {env.name}'s gateway is {env.gateway_mode}"
        )
    gateway = GatewayClient(env.gateway.url, timeout=5.0)
    try:
        before = float(gateway.config()["latency_ms"])
        gateway.configure(latency_ms=latency_ms)
        try:
            yield
        finally:
            gateway.configure(latency_ms=before)
    finally:
        gateway.close()


def audit_run(env: Environment, run: K6Run) -> LoadResult:
    """The run with the audit of the seats it booked, and k6's count of confirmed
    bookings held against the seats sold."""
    if run.script in BENCH_SCRIPTS:
        notes = [f"{run.script}: bench-only load"]
        return LoadResult(
            run.summary, AuditReport(notes=notes), run.run_id, host_steal_pct=run.host_steal_pct
        )
    report = audit(env, prefix=run.prefix)
    confirmed = run.summary.outcomes["confirmed"]
    sold = report.checked.get("sold")
    # A run cut short (Ctrl-C) stopped waiting for the checkouts in flight; they run on in
    # Restate, and each may still sell its seat.
    full_run = run.summary.exit_code in (0, k6.THRESHOLDS_FAILED_EXIT)
    if sold is None or sold < confirmed or (full_run and sold != confirmed):
        report.violations.append(
            f"k6 saw {confirmed} confirmed bookings but {sold} seats of run {run.run_id} are SOLD"
        )
    elif sold > confirmed:
        report.notes.append(
            f"{sold - confirmed} seat(s) sold by checkouts whose answer k6 did not wait for"
            f" (k6 stopped: {run.summary.exit_text})"
        )
    sale = None
    if run.script == FLASH_SALE:
        sale = flash_sale(run)
        audit_sale(env, run, report)
    return LoadResult(run.summary, report, run.run_id, sale, run.host_steal_pct)


def flash_sale(run: K6Run) -> FlashSale:
    """The sale's figures from k6's summary: seats sold, time to sell out, and the
    latency of winners (200) and refused buyers (409) apart."""
    summary = run.summary
    sold = summary.outcomes["confirmed"]
    first = summary.values("sale_first_request_ms")
    last = summary.values("sale_last_sold_ms")
    sellout_s = None
    if sold >= run.seats > 0 and "min" in first and "max" in last:
        sellout_s = round((float(last["max"]) - float(first["min"])) / 1000.0, 3)
    none = {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0}
    before, after = sale_phases(run.samples_csv, sold_out=sold >= run.seats > 0)
    return FlashSale(
        seats=run.seats,
        rate=run.rate or 0,
        duration=run.duration,
        sold=sold,
        sellout_s=sellout_s,
        winners=dict(summary.latency_by_outcome.get("confirmed", none)),
        refused=dict(summary.latency_by_outcome.get("sold_out", none)),
        refused_before_sellout=before,
        refused_after_sellout=after,
    )


# --- the flash sale's refusals before and after the sell-out ----------------------------

#: The per-outcome trends of lib/outcomes.js whose samples split the sale.
WINNER_TREND, REFUSED_TREND = "checkout_duration_confirmed", "checkout_duration_sold_out"


def sale_samples_file(env: Environment, run_id: str) -> Path:
    return env.state_dir / "load" / f"k6-samples-{run_id}.csv"


def sale_answers(path: Path) -> tuple[list[tuple[int, float]], list[tuple[int, float]]]:
    """(answer time in epoch ms, duration in ms) of every winner and every refused buyer,
    from k6's CSV samples (timestamps in unix_milli)."""
    winners: list[tuple[int, float]] = []
    refused: list[tuple[int, float]] = []
    with path.open(newline="") as fh:
        rows = csv.reader(fh)
        header = next(rows, [])
        try:
            name, stamp, value = (
                header.index(c) for c in ("metric_name", "timestamp", "metric_value")
            )
        except ValueError:
            raise NexusError(f"{path}: not a k6 CSV output (header {header[:3]})") from None
        for row in rows:
            if row[name] == WINNER_TREND:
                winners.append((int(row[stamp]), float(row[value])))
            elif row[name] == REFUSED_TREND:
                refused.append((int(row[stamp]), float(row[value])))
    return winners, refused


def sale_phases(path: Path | None, *, sold_out: bool) -> tuple[dict[str, float], dict[str, float]]:
    """Latency of the refused buyers who arrived (answer time less duration) before the
    last winner's answer, and of those who arrived after it: the surge a sold-out show
    absorbs. A sale that did not sell out has no "after". The samples file is removed."""
    if path is None or not path.is_file():
        empty = latency_group([])
        return empty, empty
    try:
        winners, refused = sale_answers(path)
    finally:
        path.unlink(missing_ok=True)
    sellout = max(t for t, _ in winners) if sold_out and winners else None
    before = [d for t, d in refused if sellout is None or t - d < sellout]
    after = [d for t, d in refused if sellout is not None and t - d >= sellout]
    return latency_group(before), latency_group(after)


def latency_group(durations: Sequence[float]) -> dict[str, float]:
    """count, p50_ms and p99_ms, interpolated between ranks as k6 does."""
    ordered = sorted(durations)
    return {
        "count": len(ordered),
        "p50_ms": round(_percentile(ordered, 0.50), 3),
        "p99_ms": round(_percentile(ordered, 0.99), 3),
    }


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    rank = fraction * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def sale_seat_id(prefix: str, number: int) -> str:
    """Ticket id of seat `number` (1-based) of a flash sale; twin of flash-sale.js."""
    return f"{prefix}seat-{number}"


def audit_sale(env: Environment, run: K6Run, report: AuditReport) -> None:
    """The sale's own figures, added to `report`: seats SOLD outside the sale or beyond
    the seats offered (violations), seats with more than one live charge, sold seats with
    exactly one live charge by their holder, and live charges of buyers who got no seat
    (refused with 409, declined or failed). The charge rules themselves are the general
    audit's, which already reports each breach as a violation; here they are counted."""
    admin = AdminClient(env.admin.url, env.token)
    try:
        seats = read_tickets(admin, run.prefix)
    finally:
        admin.close()
    offered = {sale_seat_id(run.prefix, n) for n in range(1, run.seats + 1)}
    holders = {
        seat: states[-1].reserved_by
        for seat, states in seats.items()
        if states[-1].status is TicketStatus.SOLD
    }
    outside = sorted(set(holders) - offered)
    report.checked["seats_offered"] = run.seats
    report.checked["sold_outside_the_sale"] = len(outside)
    report.violations += [f"{seat}: SOLD but not one of the sale's seats" for seat in outside]
    if len(holders) > run.seats:
        report.violations.append(f"oversold: {len(holders)} seats SOLD, {run.seats} offered")
    if env.gateway_mode != "mock":
        report.notes.append("sale: the gateway cannot list charges; charges not checked")
        return
    live = [
        c
        for c in read_charges(env.gateway.url)
        if str(c.get("ticketId") or "").startswith(run.prefix)
        and c.get("status") == "succeeded"
        and not c.get("refunded")
    ]
    per_seat = Counter(str(c["ticketId"]) for c in live)
    paid_twice = sorted(seat for seat, n in per_seat.items() if n > 1)
    one_each = sum(
        1
        for seat, holder in holders.items()
        if per_seat[seat] == 1
        and any(c["ticketId"] == seat and c.get("userId") == holder for c in live)
    )
    # A seat still RESERVED is held by a checkout that has not answered: its charge may
    # precede its confirm (the general audit allows that while the checkout runs).
    in_flight = {
        seat for seat, states in seats.items() if states[-1].status is TicketStatus.RESERVED
    }
    not_winners = [
        c
        for c in live
        if holders.get(str(c["ticketId"])) != c.get("userId") and c["ticketId"] not in in_flight
    ]
    report.checked["seats_paid_twice"] = len(paid_twice)
    report.checked["sold_with_one_live_charge"] = one_each
    report.checked["live_charges_of_buyers_without_a_seat"] = len(not_winners)


#: Steal (% of the host's CPU time) above which a run's figures say more about the
#: neighbours than about the stack: 13% turned a 180 ms p99 into 1,040 ms in a flash sale.
NOISY_STEAL_PCT = 5.0


def steal_line(steal_pct: float) -> str:
    """The summary's line on the hypervisor's share, with a warning when it is large."""
    line = f"host steal       {steal_pct:.1f}% of CPU time during the run"
    if steal_pct >= NOISY_STEAL_PCT:
        line += " (high: the figures above understate the stack; run again)"
    return line


def print_result(result: LoadResult, out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    print(k6.render_table(result.summary), file=stream)
    if result.sale is not None:
        print("\n".join(result.sale.lines()), file=stream)
    print(steal_line(result.host_steal_pct), file=stream)
    print("\n".join(result.audit.lines()), file=stream, flush=True)


def write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


# --- CPU accounting for the benchmark --------------------------------------------------


def cpu_seconds(pgid: int) -> float:
    """User + system CPU of a live process group (a granian supervisor and its worker,
    say) and the children its members reaped, from /proc."""
    total = 0
    for fields in proc_stats() or []:
        if int(fields[PGRP]) == pgid:
            total += sum(int(v) for v in fields[UTIME : UTIME + 4])
    return total / os.sysconf("SC_CLK_TCK")


def host_cpu_seconds() -> tuple[float, float]:
    """The whole host's busy and stolen CPU seconds since boot, from /proc/stat (zeros
    where there is none).

    Busy is user, nice, system, irq and softirq; steal is time the hypervisor gave our
    virtual CPUs to someone else, which slows every phase alike without showing in any
    process's figures."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields)
    except (OSError, ValueError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def host_share_pct(cpu_s: float, wall_s: float) -> float:
    """CPU seconds as a percentage of what all the host's CPUs had in `wall_s`."""
    capacity = wall_s * (os.cpu_count() or 1)
    return round(100 * cpu_s / capacity, 1) if capacity > 0 else 0.0


def measure_cpu(pids: dict[str, int], action: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """Run `action`; CPU seconds each process group spent meanwhile, plus k6 (our
    children), everything else the host ran (`others`: other processes, this one, kernel
    threads) and the hypervisor's `steal`."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    host_busy, host_steal = host_cpu_seconds()
    started = time.monotonic()
    value = action()
    wall = time.monotonic() - started
    busy, steal = host_cpu_seconds()
    after_kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    split = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    split["k6"] = (after_kids.ru_utime + after_kids.ru_stime) - (kids.ru_utime + kids.ru_stime)
    split["others"] = max(0.0, (busy - host_busy) - sum(split.values()))
    split["steal"] = steal - host_steal
    split["wall"] = wall
    return value, split


# --- the benchmark ------------------------------------------------------------------


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
) -> dict[str, Any]:
    """No-op calls, then `rounds` pairs of the checkout's Restate skeleton and full
    checkouts on uncontended seats, all at the same load; rates, latencies and the CPU
    split of each phase. With several rounds the figures are the rounds' medians: a pair
    run back to back shares the host's weather, which on a shared machine moves rates by
    ±20% from one minute to the next."""
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
        sources=Path(__file__).parent / "programs" / "bench_service.py",
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
                ),
            )
            left_open = invocations_open(stack.admin)
            return audit_run(env, _uninterrupted(run)), cpu, left_open

        noop, noop_cpu = bench_phase("noop")
        done: list[BenchRound] = []
        for _ in range(rounds):
            saga, saga_cpu = bench_phase("saga")
            done.append(BenchRound(saga, saga_cpu, *checkout_phase()))
        refusals = refusal_phase(env, stack, pids, vus=vus, duration=duration, out=stream)
    return bench_figures(vus, duration, noop, noop_cpu, done, refusals)


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
    lines += [f"NOT VALID        {problem}" for problem in result.get("problems", [])]
    return lines
