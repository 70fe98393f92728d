"""Gateway faults: payment gateway outages shorter and longer than the payment client's
retry budget."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from ops.base.processes import poll_until
from ops.chaos.base import (
    ChaosContext,
    checkout,
    expect_audit,
    gateway_faults,
    one_checkout,
    require_mock_gateway,
    ticket_state,
)
from ops.testing.checks import expect
from service.config import Settings
from service.payment import backoff_delays

SHORT_OUTAGE_S = 1.0  # shorter than the payment client's retry budget (~1.75 s)
LONG_OUTAGE_S = 6.0  # longer than it
OUTAGE_BOOKINGS = 4


def payment_budget_s(service_environ: Mapping[str, str]) -> float:
    """How long the service's payment client keeps retrying a failing gateway (the sum of
    its pauses), from the variables the service process is given."""
    settings = Settings.from_env(service_environ)
    return sum(backoff_delays(settings.payment_attempts, settings.payment_backoff_s))


def service_environ(cx: ChaosContext) -> dict[str, str]:
    """What the service reads its settings from: the environment the toolkit's children
    inherit, under the variables the stack sets for the service."""
    return {**os.environ, **cx.stack.service_env()}


def gateway_outage(cx: ChaosContext) -> str:
    """A short outage is ridden out by retries; a long one ends in 502 and released seats."""
    require_mock_gateway(cx)
    budget = payment_budget_s(service_environ(cx))
    client = cx.client()
    try:
        with gateway_faults(cx) as gw, ThreadPoolExecutor(OUTAGE_BOOKINGS) as pool:
            gw.configure(latency_ms=0)
            # (a) short outage: the retries outlast it
            short = [cx.seat("gw-short") for _ in range(OUTAGE_BOOKINGS)]
            before = gw.attempts()
            gw.configure(outage_seconds=SHORT_OUTAGE_S)
            started = time.monotonic()
            answers = list(pool.map(lambda t: one_checkout(cx, t, "outage-a"), short))
            took_short = time.monotonic() - started
            tries = gw.attempts() - before
            for t, a in zip(short, answers, strict=True):
                expect(a.status == 200, f"short outage: {t} answered {a.brief()}")
                expect(len(gw.live_charges(t)) == 1, f"{t}: not charged exactly once")
            expect(tries > len(short), f"only {tries} gateway attempts: the outage was not felt")

            # (b) long outage: the retries give up, the saga releases the seats
            long = [cx.seat("gw-long") for _ in range(OUTAGE_BOOKINGS)]
            gw.configure(outage_seconds=LONG_OUTAGE_S)
            started = time.monotonic()
            answers = list(pool.map(lambda t: one_checkout(cx, t, "outage-b"), long))
            took_long = time.monotonic() - started
            for t, a in zip(long, answers, strict=True):
                expect(a.status in (502, 503), f"long outage: {t} answered {a.brief()}")
                expect(
                    "Payment failed" in a.text and "Gateway timeout" in a.text,
                    f"long outage: {t} answered {a.brief()}",
                )
                state = ticket_state(client, t)
                expect(state["status"] == "AVAILABLE", f"{t} left {state['status']}")
                expect(not gw.live_charges(t), f"{t}: charged although the booking failed")
            ended = poll_until(
                lambda: float(gw.config()["outage_remaining_s"]) == 0.0, LONG_OUTAGE_S + 5, 0.1
            )
            expect(ended, "the outage did not end")
            again = checkout(client, long[0], "outage-c")
            expect(again.status == 200, f"after the outage: {again.brief()}")
            fresh = checkout(client, cx.seat("gw-after"), "outage-c")
            expect(fresh.status == 200, f"after the outage: {fresh.brief()}")
        states = [ticket_state(client, t)["status"] for t in short + long]
        expect("RESERVED" not in states, "a seat was left RESERVED")
    finally:
        client.close()
    figures = expect_audit(cx, f"{cx.prefix}gw-")
    return (
        f"{SHORT_OUTAGE_S:g}s outage: {len(short)}/{len(short)} bookings 200 in"
        f" {took_short:.1f}s ({tries} attempts, retry budget {budget:g}s);"
        f" {LONG_OUTAGE_S:g}s outage: {len(long)} x {answers[0].status} Gateway timeout in"
        f" {took_long:.1f}s, seats AVAILABLE, no charge; bookable again after it; {figures}"
    )
