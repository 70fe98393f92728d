"""`invoke load`'s flags as they reach the k6 run, and bad flags refused before k6 starts
(no server: the run itself is stood in for)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from invoke import Exit, MockContext

import tasks
from ops.operations.audit import AuditReport
from ops.testing import k6, runs
from ops.testing import load as loadrun


@pytest.fixture
def drive_calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every drive() the task makes, by its keyword arguments; the run itself passes."""
    calls: list[dict[str, Any]] = []

    def fake_drive(env: object, **kwargs: Any) -> runs.K6Run:
        calls.append(kwargs)
        summary = k6.LoadSummary(
            requests=1, duration_s=1.0, checkouts_per_s=1.0, p50_ms=1, p95_ms=1, p99_ms=1
        )
        return runs.K6Run(kwargs.get("script", "checkout"), summary, "r1", "load-r1:")

    def fake_audit(env: object, run: runs.K6Run) -> loadrun.LoadResult:
        return loadrun.LoadResult(run.summary, AuditReport(), run.run_id)

    monkeypatch.setattr(tasks.ops.testing.runs, "drive", fake_drive)
    monkeypatch.setattr(tasks.ops.testing.load, "audit_run", fake_audit)
    return calls


def test_vus_alone_keeps_the_closed_model(drive_calls: list[dict[str, Any]]) -> None:
    tasks.load(MockContext(), vus=12)
    (call,) = drive_calls
    assert call["rate"] is None and call["vus"] == 12 and call["ramp"] == "2s"
    assert call["thresholds"] == [] and call["k6_outputs"] == [] and call["k6_path"] is None


def test_rate_with_vus_as_the_ceiling_thresholds_outputs_and_k6_reach_the_run(
    drive_calls: list[dict[str, Any]],
) -> None:
    tasks.load(
        MockContext(),
        rate=150,
        vus=300,
        threshold=["p(99)<250", "checkout_duration_sold_out:p(99)<100"],
        k6="/opt/k6/bin/k6",
        k6_out=["json=run.json", "csv=run.csv"],
    )
    (call,) = drive_calls
    assert (call["rate"], call["vus"]) == (150, 300)
    assert call["thresholds"] == ["p(99)<250", "checkout_duration_sold_out:p(99)<100"]
    assert call["k6_path"] == "/opt/k6/bin/k6"
    assert call["k6_outputs"] == ["json=run.json", "csv=run.csv"]


def test_a_rate_without_vus_preallocates_one_second_of_arrivals(
    drive_calls: list[dict[str, Any]],
) -> None:
    tasks.load(MockContext(), script="flash-sale", rate=150, seats=200, duration="20s")
    (call,) = drive_calls
    assert (call["vus"], call["rate"], call["seats"]) == (150, 150, 200)
    assert call["ramp"] == "0s"  # a sale opens at once


def stub_env(tmp_path: Path) -> str:
    """An environment whose ingress nothing answers: a run that got that far would fail."""
    file = tmp_path / "nowhere.toml"
    file.write_text(
        '[restate]\nruntime = "external"\ningress_url = "http://127.0.0.1:1"\n'
        'admin_url = "http://127.0.0.1:2"\ntoken_env = ""\n'
        '[service]\nmode = "url"\nurl = "http://127.0.0.1:3"\n'
        f'[state]\ndir = "{tmp_path / "state"}"\n'
    )
    return str(file)


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        ({"threshold": ["p99<250"]}, "bad threshold 'p99<250'"),
        ({"k6_out": ["json="]}, "bad k6 output 'json='"),
        ({"k6": "/nowhere/k6"}, "k6 '/nowhere/k6' from --k6 does not exist"),
        ({"script": "flash-sale"}, "the flash-sale script needs --rate"),
        ({"script": "hot-seat", "rate": 10}, "the hot-seat script runs its own fixed users"),
        ({"rate": -3}, "--rate and --vus must be positive"),
    ],
)
def test_bad_flags_are_refused_before_k6_starts(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    flags: dict[str, Any],
    says: str,
) -> None:
    monkeypatch.setattr(k6, "run_k6", lambda *a, **k: pytest.fail("k6 started"))
    with pytest.raises(Exit) as exited:
        tasks.load(MockContext(), env=stub_env(tmp_path), **flags)
    assert exited.value.code == 2
    assert says in str(exited.value.message)
