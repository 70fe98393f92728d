"""CPU accounting of `invoke bench` (ops/testing/host_cpu.py, ops/testing/bench.py) with
real, short-lived processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ops.base.processes import UTIME, proc_stat
from ops.operations.audit import AuditReport
from ops.testing import k6
from ops.testing.bench import (
    BenchRound,
    RefusalPhase,
    bench_figures,
    bench_lines,
    cpu_ms_per_call,
)
from ops.testing.host_cpu import (
    cpu_seconds,
    host_cpu_seconds,
    host_share_pct,
    measure_cpu,
    steal_line,
)
from ops.testing.load import LoadResult

# A group leader that sleeps while its child burns CPU: granian's supervisor and worker.
LEADER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import time\\nend = time.process_time() + 0.5\\nwhile time.process_time() < end: pass\\n"
    "print('burnt', flush=True)\\ntime.sleep(30)"], stdout=sys.stdout)
time.sleep(30)
"""


def test_cpu_of_a_group_counts_its_live_children() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", LEADER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "burnt"
        time.sleep(0.05)
        group = cpu_seconds(proc.pid)
        leader_fields = proc_stat(proc.pid)
        assert leader_fields is not None
        leader_alone = sum(int(v) for v in leader_fields[UTIME : UTIME + 2]) / os.sysconf(
            "SC_CLK_TCK"
        )
        assert group >= 0.45
        assert leader_alone < 0.3  # the leader itself only slept: the figure is the child's
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_cpu_of_an_unknown_group_is_zero() -> None:
    assert cpu_seconds(2**22 + 12345) == 0.0


def test_cpu_per_call_counts_server_service_and_gateway_over_every_answer() -> None:
    outcomes = dict.fromkeys(k6.OUTCOMES, 0) | {"confirmed": 150, "sold_out": 50}
    summary = k6.LoadSummary(
        requests=200,
        duration_s=1.0,
        checkouts_per_s=200.0,
        p50_ms=1,
        p95_ms=1,
        p99_ms=1,
        outcomes=outcomes,
    )
    cpu = {"restate-server": 1.0, "service": 0.6, "gateway": 0.2, "k6": 5.0, "wall": 20.0}
    assert cpu_ms_per_call(cpu, summary) == 9.0  # 1.8 s over 200 answers; k6 and wall left out
    assert cpu_ms_per_call({"restate-server": 1.0}, summary) == 5.0  # a process not measured
    empty = k6.LoadSummary(
        requests=0, duration_s=1.0, checkouts_per_s=0, p50_ms=0, p95_ms=0, p99_ms=0
    )
    assert cpu_ms_per_call(cpu, empty) == 0.0


BURNER = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass\n"


def test_host_cpu_counts_busy_time() -> None:
    busy, steal = host_cpu_seconds()
    subprocess.run([sys.executable, "-c", BURNER], check=True)
    busy_after, steal_after = host_cpu_seconds()
    assert busy_after - busy >= 0.4  # the burner's half second, at least
    assert steal_after >= steal >= 0


def test_measure_cpu_counts_other_processes_apart() -> None:
    # Started before the window and reaped after it: not one of ours, not k6.
    burner = subprocess.Popen([sys.executable, "-c", BURNER])
    try:
        _, split = measure_cpu({}, lambda: time.sleep(0.8))
    finally:
        burner.wait()
    assert split["others"] >= 0.35, split
    assert split["k6"] < 0.1 and split["wall"] >= 0.8
    assert split["steal"] >= 0


def _phase(rate: float, p99: float, confirmed: int) -> LoadResult:
    outcomes = dict.fromkeys(k6.OUTCOMES, 0) | {"confirmed": confirmed}
    summary = k6.LoadSummary(
        requests=confirmed,
        duration_s=10.0,
        checkouts_per_s=rate,
        p50_ms=p99 / 2,
        p95_ms=p99,
        p99_ms=p99,
        outcomes=outcomes,
    )
    return LoadResult(summary=summary, audit=AuditReport(), run_id="r")


def _round(saga_rate: float, rate: float, p99: float, cpu_s: float) -> BenchRound:
    cpu = {"restate-server": cpu_s, "service": 0.0, "gateway": 0.0, "steal": 2.0, "wall": 10.0}
    return BenchRound(
        saga=_phase(saga_rate, 50, int(saga_rate * 10)),
        saga_cpu=cpu,
        full=_phase(rate, p99, int(rate * 10)),
        full_cpu=cpu,
        left_open=3,
    )


def test_bench_figures_are_the_rounds_medians_with_pooled_cpu() -> None:
    noop = _phase(1000.0, 20, 10_000)
    rounds = [
        _round(200.0, 150.0, 300, 15.0),  # 75%
        _round(180.0, 171.0, 240, 15.0),  # 95%
        _round(200.0, 170.0, 260, 30.0),  # 85%
    ]
    for r in rounds:
        r.full.audit.checked["sold"] = r.full.summary.outcomes["confirmed"]
    figures = bench_figures(32, "10s", noop, {"restate-server": 10.0}, rounds)
    assert figures["audit"]["sold"] == 4910 and figures["audit"]["ok"]  # every round's seats
    assert figures["checkout_of_saga"] == 0.85
    assert figures["checkouts_per_s"] == 170.0 and figures["saga_per_s"] == 200.0
    assert figures["checkout_p99_ms"] == 260.0
    # 60 s of server CPU over 1,500 + 1,710 + 1,700 checkouts
    assert figures["cpu_ms_per_checkout"] == round(60_000 / 4910, 3)
    assert figures["cpu_checkout_s"]["restate-server"] == 60.0
    assert [r["checkout_of_saga"] for r in figures["rounds"]] == [0.75, 0.95, 0.85]
    cpus = os.cpu_count() or 1
    assert figures["rounds"][0]["steal_pct"] == round(100 * 2.0 / (10.0 * cpus), 1)
    assert figures["ok"] and figures["checkout_outcomes"]["confirmed"] == 4910
    text = "\n".join(bench_lines(figures))
    assert "round 2" in text and "(95%)" in text and "steal" in text
    high = figures["rounds"][0]["steal_pct"] >= 5.0  # 2 s of 10 s on this many CPUs
    assert ("(high steal)" in text) is high


def test_a_bad_round_is_named() -> None:
    noop = _phase(1000.0, 20, 10_000)
    bad = _round(200.0, 150.0, 300, 15.0)
    bad.full.summary.outcomes["unexpected"] = 4
    figures = bench_figures(32, "10s", noop, {}, [_round(200.0, 170.0, 260, 15.0), bad])
    assert not figures["ok"]
    assert any(p.startswith("checkouts 2: ") for p in figures["problems"]), figures["problems"]
    oversold = _round(200.0, 170.0, 260, 15.0)
    oversold.full.audit.violations.append("seat-1: two live charges")
    figures = bench_figures(32, "10s", noop, {}, [_round(200.0, 170.0, 260, 15.0), oversold])
    assert figures["problems"] == ["checkouts audit: seat-1: two live charges"]
    assert figures["audit"]["ok"] is False


def test_host_share_is_a_percentage_of_every_cpu() -> None:
    cpus = os.cpu_count() or 1
    assert host_share_pct(cpus * 5.0, 10.0) == 50.0
    assert host_share_pct(1.0, 0.0) == 0.0  # no time, no share


def test_a_run_with_high_steal_says_its_figures_understate_the_stack() -> None:
    assert steal_line(0.4) == "host steal       0.4% of CPU time during the run"
    assert "high" not in steal_line(4.9)
    assert "(high: the figures above understate the stack; run again)" in steal_line(13.1)


def _refusals(answers: int, cpu_s: float, confirmed: int = 0) -> RefusalPhase:
    phase = _phase(answers / 10.0, 80, 0)
    phase.summary.outcomes["sold_out"] = answers - confirmed
    phase.summary.outcomes["confirmed"] = confirmed
    cpu = {"restate-server": cpu_s, "service": 1.0, "gateway": 0.0, "steal": 0.0, "wall": 10.0}
    return RefusalPhase(phase, cpu, seats=200)


def test_a_refusals_cost_is_its_cpu_over_a_noop_calls() -> None:
    noop = _phase(1000.0, 20, 10_000)  # 10 s of CPU over 10,000 calls: 1 ms each
    rounds = [_round(200.0, 170.0, 260, 15.0)]
    figures = bench_figures(32, "10s", noop, {"restate-server": 10.0}, rounds, _refusals(6000, 8.0))
    assert figures["refusals_per_s"] == 600.0 and figures["refusal_p99_ms"] == 80.0
    assert figures["cpu_ms_per_refusal"] == 1.5  # 9 s of server + service over 6,000
    assert figures["refusal_cost_noop_calls"] == 1.5
    assert figures["ok"], figures["problems"]
    text = "\n".join(bench_lines(figures))
    assert "refusal cost         1.50" in text and "cpu_refusal_s" in text
    without = bench_figures(32, "10s", noop, {"restate-server": 10.0}, rounds)
    assert "refusals_per_s" not in without and "refusal cost" not in "\n".join(bench_lines(without))


def test_a_sold_seat_that_is_sold_again_makes_the_refusals_invalid() -> None:
    noop = _phase(1000.0, 20, 10_000)
    figures = bench_figures(
        32, "10s", noop, {}, [_round(200.0, 170.0, 260, 15.0)], _refusals(6000, 8.0, confirmed=2)
    )
    assert not figures["ok"]
    assert figures["problems"] == [
        "refusals: answers other than 409 for sold seats: {'confirmed': 2}"
    ]
