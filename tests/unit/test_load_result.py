"""How a k6 run and its audit become a verdict (no server: the audit is stood in for)."""

from __future__ import annotations

import pytest

from ops.base import environments
from ops.operations.audit import AuditReport
from ops.testing import flash_sale, k6, runs
from ops.testing import load as loadrun


def run_with(confirmed: int, exit_code: int) -> runs.K6Run:
    outcomes = dict.fromkeys(k6.OUTCOMES, 0) | {"confirmed": confirmed}
    summary = k6.LoadSummary(
        requests=confirmed,
        duration_s=1.0,
        checkouts_per_s=float(confirmed),
        p50_ms=1.0,
        p95_ms=1.0,
        p99_ms=1.0,
        outcomes=outcomes,
        exit_code=exit_code,
    )
    return runs.K6Run("checkout", summary, "r1", prefix="load-r1:")


def audited(monkeypatch: pytest.MonkeyPatch, run: runs.K6Run, sold: int) -> loadrun.LoadResult:
    monkeypatch.setattr(loadrun, "audit", lambda env, prefix: AuditReport(checked={"sold": sold}))
    return loadrun.audit_run(environments.load("local"), run)


def test_a_full_run_must_have_sold_exactly_what_k6_saw_confirmed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert audited(monkeypatch, run_with(5, 0), sold=5).ok
    result = audited(monkeypatch, run_with(5, 0), sold=6)
    assert result.audit.violations == ["k6 saw 5 confirmed bookings but 6 seats of run r1 are SOLD"]
    assert result.problems() == ["audit: 1 violation(s)"]


def test_an_interrupted_run_may_have_sold_more_than_k6_saw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    result = audited(monkeypatch, run_with(5, k6.INTERRUPTED_EXIT), sold=7)
    assert result.audit.ok
    assert "2 seat(s) sold by checkouts whose answer k6 did not wait for" in result.audit.notes[0]
    assert result.problems() == ["k6 exit 105 (interrupted)"]  # still a failed load
    fewer = audited(monkeypatch, run_with(5, k6.INTERRUPTED_EXIT), sold=4)
    assert not fewer.audit.ok  # a confirmed booking without its sold seat is never fine


def test_a_crossed_threshold_fails_the_run_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_with(3, k6.THRESHOLDS_FAILED_EXIT)
    run.summary.thresholds_ok = False
    result = audited(monkeypatch, run, sold=3)
    assert result.audit.ok
    assert result.problems() == ["k6 exit 99 (a threshold was crossed)"]


def test_a_crossed_threshold_is_named_in_the_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    run = run_with(3, k6.THRESHOLDS_FAILED_EXIT)
    run.summary.thresholds = [
        k6.ThresholdResult("checkout_duration", "p(99)<250", ok=False),
        k6.ThresholdResult("outcome_unexpected", "count==0", ok=True),
    ]
    run.summary.thresholds_ok = False
    result = audited(monkeypatch, run, sold=3)
    assert result.problems() == [
        "k6 exit 99 (a threshold was crossed): threshold crossed: checkout_duration p(99)<250"
    ]


def sale_run(confirmed: int, seats: int) -> runs.K6Run:
    outcomes = dict.fromkeys(k6.OUTCOMES, 0) | {"confirmed": confirmed, "sold_out": 50}
    summary = k6.parse_summary(
        {
            "state": {"testRunDurationMs": 5000},
            "metrics": {
                **{f"outcome_{o}": {"values": {"count": n}} for o, n in outcomes.items()},
                "checkout_duration_confirmed": {
                    "values": {"count": confirmed, "p(50)": 120.0, "p(99)": 380.5}
                },
                "checkout_duration_sold_out": {
                    "values": {"count": 50, "p(50)": 9.0, "p(99)": 40.0}
                },
                "sale_first_request_ms": {"values": {"value": 4990, "min": 2, "max": 4990}},
                "sale_last_sold_ms": {"values": {"value": 3000, "min": 90, "max": 3402}},
                "dropped_iterations": {"values": {"count": 2}},
            },
        }
    )
    return runs.K6Run("flash-sale", summary, "r1", "sale-r1:", seats=seats, rate=30, duration="5s")


def test_a_flash_sale_reports_sellout_and_winners_apart_from_refused_buyers() -> None:
    sale = flash_sale.flash_sale(sale_run(confirmed=20, seats=20))
    assert sale.sold_out and sale.sold == 20
    assert sale.sellout_s == pytest.approx(3.4)  # (3402 - 2) ms
    assert sale.winners == {"count": 20, "p50_ms": 120.0, "p99_ms": 380.5}
    assert sale.refused == {"count": 50, "p50_ms": 9.0, "p99_ms": 40.0}
    text = "\n".join(sale.lines())
    assert "sold out in 3.40 s" in text and "p99 380.5 ms" in text and "p99 40.0 ms" in text


def test_a_flash_sale_that_did_not_sell_out_fails_and_says_so() -> None:
    run = sale_run(confirmed=17, seats=20)
    sale = flash_sale.flash_sale(run)
    assert not sale.sold_out and sale.sellout_s is None
    result = loadrun.LoadResult(run.summary, AuditReport(checked={"sold": 17}), "r1", sale)
    assert result.problems() == [
        "not sold out: 17 of 20 seats sold in 5s (run longer, or at a higher rate)"
    ]
    data = result.to_dict()
    assert (data["sold"], data["seats"], data["sold_out"], data["sellout_s"]) == (
        17,
        20,
        False,
        None,
    )
    assert data["dropped_iterations"] == 2 and data["winners"]["p99_ms"] == 380.5
    assert data["outcomes"]["sold_out"] == 50 and data["audit"]["sold"] == 17
