"""How a k6 run and its audit become a verdict (no server: the audit is stood in for)."""

from __future__ import annotations

import pytest

from ops import environments, k6
from ops import load as loadrun
from ops.audit import AuditReport


def run_with(confirmed: int, exit_code: int) -> loadrun.K6Run:
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
    return loadrun.K6Run("checkout", summary, "r1", prefix="load-r1:")


def audited(monkeypatch: pytest.MonkeyPatch, run: loadrun.K6Run, sold: int) -> loadrun.LoadResult:
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
