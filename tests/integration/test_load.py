"""A short real k6 load through the ingress, and the audit shown able to fail."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest

from ops.base.errors import ApiError
from ops.base.processes import poll_until
from ops.clients.admin import AdminClient, GatewayClient
from ops.clients.invocations import checkouts_in_flight
from ops.operations.audit import audit
from ops.release.stack import Stack
from ops.testing import k6
from ops.testing.bench import BENCH, bench, bench_lines
from ops.testing.flash_sale import write_chart
from ops.testing.load import audit_run
from ops.testing.runs import drive, gateway_latency
from tests.conftest import run_invoke
from tests.integration.inflight import checkout_in_flight
from tests.streams import CtrlCOnProgress

pytestmark = pytest.mark.integration


def test_short_load_sees_every_business_outcome_and_audits_clean(stack: Stack) -> None:
    out = io.StringIO()
    # 80 seats: enough first attempts that the 10 % declines and errors surely show up,
    # few enough that they sell out and later buyers meet "sold out".
    result = audit_run(
        stack.env, drive(stack.env, vus=6, duration="5s", ramp="0s", seats=80, out=out)
    )
    outcomes = result.summary.outcomes
    assert outcomes["unexpected"] == 0, out.getvalue()[-3000:]
    for name in ("confirmed", "sold_out", "declined", "gateway_error"):
        assert outcomes[name] > 0, (name, outcomes)
    assert result.summary.checkouts_per_s > 0 and result.summary.p99_ms > 0
    assert result.audit.ok, result.audit.violations
    assert result.audit.checked["sold"] == outcomes["confirmed"]
    assert result.ok
    data = result.to_dict()
    for key in ("checkouts_per_s", "p50_ms", "p95_ms", "p99_ms", "outcomes", "audit"):
        assert key in data
    assert data["audit"]["ok"] is True


def test_a_short_flash_sale_sells_every_seat_once_and_audits_clean(
    stack: Stack, tmp_path: Path
) -> None:
    out = io.StringIO()
    # 40 buyers/s for 5 s on 20 seats: 10 buyers per seat, the default payment mix.
    run = drive(
        stack.env,
        script="flash-sale",
        seats=20,
        rate=40,
        vus=40,
        duration="5s",
        ramp="0s",
        out=out,
    )
    result = audit_run(stack.env, run)
    assert result.sale is not None, out.getvalue()[-3000:]
    assert result.sale.sold == 20 and result.sale.sold_out, result.summary.outcomes
    assert result.audit.ok, result.audit.violations
    checked = result.audit.checked
    assert checked["sold"] == 20 and checked["sold_outside_the_sale"] == 0
    assert checked["sold_with_one_live_charge"] == 20 and checked["seats_paid_twice"] == 0
    assert checked["live_charges_of_buyers_without_a_seat"] == 0
    assert checked["live_charges"] == 20  # declined and failed buyers' charges are undone
    assert result.summary.outcomes["sold_out"] > 0 and result.summary.outcomes["unexpected"] == 0
    assert result.sale.sellout_s is not None and 0 < result.sale.sellout_s < 15
    assert result.sale.winners["count"] == 20 and result.sale.winners["p99_ms"] > 0
    assert result.sale.refused["count"] == result.summary.outcomes["sold_out"]
    # Every refusal falls on one side of the sell-out, read from k6's own samples.
    before, after = result.sale.refused_before_sellout, result.sale.refused_after_sellout
    assert before["count"] + after["count"] == result.sale.refused["count"]
    assert after["count"] > 0 and after["p99_ms"] > 0  # 10 waves: most come after it
    assert run.samples_csv is not None and not run.samples_csv.exists()  # read, then removed
    assert result.ok, result.problems()
    data = result.to_dict()
    for key in (
        "sellout_s",
        "sold",
        "seats",
        "winners",
        "refused",
        "refused_before_sellout",
        "refused_after_sellout",
        "outcomes",
    ):
        assert key in data
    assert data["dropped_iterations"] == result.summary.dropped_iterations
    assert data["audit"]["ok"] is True
    # The chart from the same samples: a line per outcome, counts in the legend, the
    # sell-out marked.
    chart = write_chart(result.sale, tmp_path / "sale.svg", result.run_id)
    assert chart is not None
    svg = ET.parse(chart).getroot()
    lines = {e.get("data-outcome") for e in svg.iter("{http://www.w3.org/2000/svg}polyline")}
    assert {"confirmed", "sold_out"} <= lines
    texts = [e.text for e in svg.iter("{http://www.w3.org/2000/svg}text")]
    assert "confirmed (20)" in texts and f"sold_out ({result.sale.refused['count']})" in texts
    assert "sold out" in texts
    assert 0 <= data["host_steal_pct"] <= 100 and data["host_steal_pct"] == run.host_steal_pct


def rendered(report: Path, tmp_path: Path) -> str:
    """The report's DOM as headless Chromium renders it, offline (no network at all)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "chromium is not installed (.ci/run installs it)"
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--proxy-server=127.0.0.1:9", f"--user-data-dir={tmp_path / 'chromium'}",
         "--dump-dom", report.resolve().as_uri()],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and "<body" in proc.stdout, proc.stderr[-2000:]
    return proc.stdout


def test_a_passing_run_s_report_says_so_on_its_first_screen(stack: Stack, tmp_path: Path) -> None:
    report = tmp_path / "passed.html"
    args = ("--rate", "5", "--vus", "4", "--duration", "2s", "--seats", "50", "--mix", "success")
    proc = run_invoke("load", "--env", str(stack.env.file), *args, "--report", str(report),
                      timeout=120)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    page = rendered(report, tmp_path)
    assert "Load run PASSED" in page and "CROSSED" not in page and "audit</th><td>clean" in page
    assert "Outcomes per second" in page and "<rect" in page  # the timeline has columns


def test_a_crossed_threshold_fails_invoke_load_naming_it(stack: Stack, tmp_path: Path) -> None:
    points = tmp_path / "points.json"
    summary = tmp_path / "s.json"
    wheel_k6 = str(k6.k6_binary())
    env = {**os.environ, "NEXUS_K6": wheel_k6}
    proc = run_invoke(
        "load",
        "--env",
        str(stack.env.file),
        "--rate",
        "5",
        "--vus",
        "4",
        "--duration",
        "2s",
        "--seats",
        "50",
        "--mix",
        "success",
        "--threshold",
        "p(99)<0.001",
        "--threshold",
        "outcome_unexpected:count<100",
        "--k6-out",
        f"json={points}",
        "--out",
        str(summary),
        "--report",
        str(tmp_path / "failed.html"),
        env=env,
        timeout=120,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text[-3000:]
    assert "threshold crossed: checkout_duration p(99)<0.001" in text
    page = rendered(tmp_path / "failed.html", tmp_path)
    assert "Load run FAILED" in page and "CROSSED: checkout_duration p(99)&lt;0.001" in page
    assert "PASSED" not in page and stack.version in page
    assert f"k6 {wheel_k6}" in text  # NEXUS_K6 chose the k6
    data = json.loads(summary.read_text())
    crossed = [t for t in data["thresholds"] if not t["ok"]]
    assert crossed == [{"metric": "checkout_duration", "expression": "p(99)<0.001", "ok": False}]
    assert data["audit"]["ok"] is True  # the bookings themselves were fine
    samples = [json.loads(line) for line in points.read_text().splitlines()]
    tagged = {s["data"]["tags"].get("testid") for s in samples if s["type"] == "Point"}
    assert tagged == {data["run_id"]}


def test_a_load_stopped_by_ctrl_c_is_still_audited_and_fails(stack: Stack) -> None:
    out = CtrlCOnProgress(nth=3)
    run = drive(stack.env, vus=4, duration="60s", ramp="0s", seats=40, out=out)
    assert out.pressed and run.summary.interrupted
    assert run.summary.duration_s < 30 and run.summary.requests > 0
    result = audit_run(stack.env, run)
    # The checkouts k6 stopped waiting for run on in Restate; none may break an invariant.
    assert result.audit.ok, result.audit.violations
    assert result.audit.checked["sold"] >= run.summary.outcomes["confirmed"]
    assert not result.ok and result.problems() == ["k6 exit 105 (interrupted)"]
    assert result.to_dict()["k6_exit_code"] == 105


def test_audit_reports_planted_inconsistencies(stack: Stack) -> None:
    prefix = f"planted-{uuid.uuid4().hex[:8]}:"
    free_seat, given_away = f"{prefix}a", f"{prefix}b"
    # A charge for a seat nobody holds: money taken, no ticket.
    httpx.post(
        f"{stack.env.gateway.url}/charges",
        headers={"Idempotency-Key": f"planted-{uuid.uuid4()}"},
        json={"paymentMethodId": "card_success", "ticketId": free_seat, "userId": "mallory"},
    ).raise_for_status()
    # A seat sold without any charge, straight through the Ticket API.
    assert stack.ingress.call("Ticket", "reserve", "trudy", key=given_away).status_code == 200
    assert stack.ingress.call("Ticket", "confirm", "trudy", key=given_away).status_code == 200
    report = audit(stack.env, prefix=prefix)
    assert not report.ok
    text = "\n".join(report.violations)
    assert f"{free_seat}: live charge" in text and "not sold" in text
    assert f"{given_away}: SOLD to trudy with 0 live charges" in text


def test_audit_counts_running_checkouts(stack: Stack) -> None:
    """A checkout waiting on a slow gateway holds its seat without a deadline and counts
    as running; once answered, nothing runs and the seat is SOLD."""
    seat = f"inflight-{uuid.uuid4().hex[:8]}:s1"
    admin = AdminClient(stack.env.admin.url, stack.env.token)
    with checkout_in_flight(stack, seat, "olga", charge_ms=1500) as answer:
        held = seat_state(stack, seat)
        assert held == {"status": "RESERVED", "reservedBy": "olga", "reservedUntil": None}
        assert len(checkouts_in_flight(admin)) >= 1
        assert audit(stack.env, prefix=seat).ok  # held, but its checkout is running
        assert answer.result(timeout=10).status_code == 200
    assert poll_until(lambda: not checkouts_in_flight(admin), 5.0)
    admin.close()
    assert seat_state(stack, seat)["status"] == "SOLD"


def test_audit_reports_the_seat_a_killed_checkout_left_held(stack: Stack) -> None:
    """Killed (not cancelled), a checkout runs no compensation: its hold stays, and the
    audit names it by the checkout's invocation id."""
    seat = f"killed-{uuid.uuid4().hex[:8]}:s1"
    admin = AdminClient(stack.env.admin.url, stack.env.token)
    with checkout_in_flight(stack, seat, "kim", charge_ms=1500) as answer:
        (checkout_id,) = checkouts_in_flight(admin)
        admin.kill(checkout_id)
        assert answer.result(timeout=10).status_code >= 400
    assert poll_until(lambda: not checkouts_in_flight(admin), 5.0)
    admin.close()
    report = audit(stack.env, prefix=seat)
    assert not report.ok
    assert f"held for checkout {checkout_id} of kim, which is no longer running" in (
        " ".join(report.violations)
    )


def seat_state(stack: Stack, seat: str) -> dict[str, object]:
    state: dict[str, object] = stack.ingress.call("Ticket", "get", key=seat).json()
    return state


def test_a_gateway_latency_holds_for_the_block_and_is_undone_even_on_failure(
    stack: Stack,
) -> None:
    gateway = GatewayClient(stack.env.gateway.url, timeout=5.0)
    seat = f"latency-{uuid.uuid4().hex[:8]}:a"
    try:
        gateway.configure(latency_ms=3)
        with pytest.raises(RuntimeError, match="inside"), gateway_latency(stack.env, 400):
            assert gateway.config()["latency_ms"] == 400
            started = time.monotonic()
            answer = stack.ingress.call("Checkout", "process", {"ticketId": seat, "userId": "u"})
            assert answer.status_code == 200 and time.monotonic() - started >= 0.4
            raise RuntimeError("inside the block")
        assert gateway.config()["latency_ms"] == 3
    finally:
        gateway.configure(latency_ms=0)
        gateway.close()


def test_a_bench_that_fails_to_register_undoes_what_it_started(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise ApiError("registration refused (planted by the test)")

    monkeypatch.setattr(AdminClient, "register", refuse)
    gateway = GatewayClient(stack.env.gateway.url, timeout=5.0)
    gateway.configure(latency_ms=3)
    try:
        with pytest.raises(ApiError, match="planted"):
            bench(stack.env, vus=1, duration="1s", out=io.StringIO())
        assert gateway.config()["latency_ms"] == 3
    finally:
        gateway.configure(latency_ms=0)
        gateway.close()
    assert stack.procs.info(BENCH).pid is None  # the bench service was stopped


def test_short_bench_measures_its_phases_and_cleans_up(stack: Stack, tmp_path: Path) -> None:
    gateway = GatewayClient(stack.env.gateway.url, timeout=5.0)
    gateway.configure(latency_ms=3)
    out = io.StringIO()
    try:
        chart = tmp_path / "bench.svg"
        result = bench(stack.env, vus=4, duration="2s", rounds=2, out=out, chart=chart)
        assert gateway.config()["latency_ms"] == 3  # the bench's latency 0 is undone
    finally:
        gateway.configure(latency_ms=0)
        gateway.close()
    assert result["noop_per_s"] > 0 and result["saga_per_s"] > 0
    assert result["checkouts_per_s"] > 0, out.getvalue()[-3000:]
    assert result["ratio"] == pytest.approx(
        result["checkouts_per_s"] / result["noop_per_s"], abs=0.002
    )
    outcomes = result["checkout_outcomes"]
    assert outcomes["confirmed"] > 0 and outcomes["unexpected"] == 0
    assert sum(outcomes.values()) == outcomes["confirmed"]  # card_success on fresh seats
    assert result["audit"]["ok"] is True
    assert result["ok"] is True and result["problems"] == []
    assert result["chart"] == str(chart)
    svg = ET.parse(chart).getroot()
    lines = {e.get("data-outcome") for e in svg.iter("{http://www.w3.org/2000/svg}polyline")}
    assert lines == {"confirmed"}  # fresh seats, card_success: nothing else
    for phase in ("cpu_noop_s", "cpu_saga_s", "cpu_checkout_s"):
        assert result[phase]["restate-server"] > 0 and result[phase]["service"] > 0
        assert "gateway" in result[phase]  # every phase counts the same three processes
    assert result["cpu_ms_per_noop"] > 0 and result["cpu_ms_per_checkout"] > 0
    assert result["checkout_cost_noop_calls"] == pytest.approx(
        result["cpu_ms_per_checkout"] / result["cpu_ms_per_noop"], rel=0.01
    )
    assert result["checkout_cost_noop_calls"] > 1  # a checkout is several Restate calls
    names = {s["name"] for s in stack.admin.services()}
    assert not names & {"Bench", "BenchSeat", "BenchShard"}  # its deployment is removed
    text = "\n".join(bench_lines(result))
    assert "saga skeleton" in text and "cpu_saga_s" in text and "ratio" in text
    assert "no-op calls of CPU" in text
    assert len(result["rounds"]) == 2 and "round 2" in text  # skeleton, checkouts, twice
    rates = sorted(r["checkouts_per_s"] for r in result["rounds"])
    assert result["checkouts_per_s"] == pytest.approx(sum(rates) / 2, abs=0.1)  # the median
    assert result["cpu_checkout_s"]["steal"] >= 0 and "others" in result["cpu_checkout_s"]
    # The refusal phase: a sold-out show, every answer a 409, each seat sold once.
    refused = result["refusal_outcomes"]
    assert refused["sold_out"] > 0 and sum(refused.values()) == refused["sold_out"]
    assert result["refusal_audit"]["ok"] and result["refusal_audit"]["sold"] == 200
    assert result["refusals_per_s"] > 0 and result["refusal_p99_ms"] > 0
    assert result["refusal_cost_noop_calls"] == pytest.approx(
        result["cpu_ms_per_refusal"] / result["cpu_ms_per_noop"], rel=0.01
    )
    assert "refusal cost" in text and "cpu_refusal_s" in text
