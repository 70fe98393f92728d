"""The server-upgrade scenario's judgement as data: a run that lost nothing passes, and
each way of losing something (or proving nothing) is named."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ops.chaos.upgrade import TO_VERSION, Booking, Upgrade, figures, outage, verdict


def booking(started: float, ended: float, status: int = 200, expected: int = 200) -> Booking:
    return Booking(f"s-{started}", "u", f"k-{started}", "card_success", expected, started,
                   ended, status)  # fmt: skip


def good() -> Upgrade:
    """Deploy from t=10 to t=12; the server away from t=10.5 to t=11.3."""
    return Upgrade(
        bookings=[
            booking(9.0, 9.4),
            booking(10.2, 11.6),  # in flight when the server stopped
            booking(10.3, 11.5, 402, 402),
            booking(11.0, 11.8),
            booking(12.5, 12.9),
            booking(13.0, 13.1, 409, 409),
        ],
        probes=[
            (10.0, None),
            (10.5, "connection dropped"),
            (11.0, "connection refused"),
            (11.3, None),
        ],
        deploy_started=10.0,
        deploy_ended=12.0,
        deploy_failed=False,
        deploy_lines=["RECAP ok"],
        marker_versions=[TO_VERSION],
        server_version=TO_VERSION,
        pids=(100, 200),
        deployments=(["dp_1"], ["dp_1"]),
        audit_line="audit ok",
    )


def test_a_run_that_lost_nothing_passes_with_its_figures() -> None:
    run = good()
    assert verdict(run) == []
    assert outage(run.probes) == (10.5, 11.3, pytest.approx(0.8))
    text = figures(run)
    assert "ingress down 0.80s" in text and "2 checkouts in flight at the stop" in text
    assert "before 1 confirmed/0 declined/0 refused" in text
    assert "during 2 confirmed/1 declined/0 refused" in text
    assert "after 1 confirmed/0 declined/1 refused" in text


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"bookings": [*good().bookings, booking(11.0, 100.0, 0)]}, "never answered for good"),
        ({"bookings": [*good().bookings, booking(11.0, 12.0, 500)]}, "other than expected"),
        ({"open_invocations": ["inv_1 backing-off"]}, "invocations still open"),
        ({"mismatches": ["Checkout/process: [570] Journal mismatch"]}, "journal mismatch"),
        ({"audit_violations": ["s-1: 2 live charges"]}, "audit: s-1: 2 live charges"),
        ({"lost": ["s-1: confirmed to u but AVAILABLE"]}, "confirmed to u but"),
        ({"marker_versions": ["1.6.2"]}, "data marker says ['1.6.2']"),
        ({"server_version": "1.6.2"}, "reports version 1.6.2"),
        ({"pids": (100, 100)}, "was not restarted"),
        ({"deployments": (["dp_1"], ["dp_2"])}, "registered deployments changed"),
        ({"deploy_failed": True}, "the deploy to"),
        ({"probes": [(10.0, None), (10.5, "timeout")]}, "never answered again"),
        ({"bookings": [booking(9.0, 9.4), booking(12.5, 12.9)]}, "no checkout was in flight"),
        ({"bookings": good().bookings[:4]}, "no checkout confirmed on"),
    ],
)
def test_each_loss_is_named(change: dict[str, object], named: str) -> None:
    problems = verdict(replace(good(), **change))  # type: ignore[arg-type]
    assert any(named in p for p in problems), problems


def test_the_figures_of_a_failed_run_say_what_was_found() -> None:
    run = replace(good(), open_invocations=["inv_1 backing-off"], mismatches=["m"])
    run.bookings.append(booking(10.4, 100.0, 0))
    text = figures(run)
    assert "1 open invocations, 1 journal mismatches" in text
    assert "3 checkouts in flight at the stop, 2 of them answered for good" in text
