"""Contention: a crowd on one seat, and holds that expire with a confirm racing them."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from ops.base.processes import poll_until
from ops.chaos.base import (
    ChaosContext,
    one_checkout,
    ticket_state,
)
from ops.clients.admin import GatewayClient
from ops.testing.checks import Skip, expect
from ops.testing.scenarios import SHORT_HOLD_S

HOT_BUYERS = 100
HOT_WORKERS = 32


def hot_seat(cx: ChaosContext) -> str:
    """A crowd on one seat: one winner, everyone else 409, one charge."""
    t = cx.seat("hot")
    started = time.monotonic()
    with ThreadPoolExecutor(HOT_WORKERS) as pool:
        answers = list(pool.map(lambda i: one_checkout(cx, t, f"fan-{i}"), range(HOT_BUYERS)))
    took = time.monotonic() - started
    winners = [i for i, a in enumerate(answers) if a.status == 200]
    refused = [a for a in answers if a.status == 409]
    expect(len(winners) == 1, f"{len(winners)} winners among {HOT_BUYERS}")
    others = sorted({a.brief()[:60] for a in answers if a.status not in (200, 409)})
    expect(len(refused) == HOT_BUYERS - 1, f"unexpected answers: {others}")
    wording = ("Ticket already sold", "Ticket is currently reserved")
    expect(all(any(w in a.text for w in wording) for a in refused), "a 409 without its reason")
    client = cx.client()
    try:
        state = ticket_state(client, t)
    finally:
        client.close()
    winner = f"fan-{winners[0]}"
    expect(state["status"] == "SOLD" and state["reservedBy"] == winner, f"seat is {state}")
    charges = "charges not listed (external gateway)"
    if cx.env.gateway_mode == "mock":
        gw = GatewayClient(cx.env.gateway.url, timeout=10.0)
        try:
            live = gw.live_charges(t)
        finally:
            gw.close()
        expect(len(live) == 1 and live[0].get("userId") == winner, f"charges {live}")
        charges = "1 live charge"
    return (
        f"{HOT_BUYERS} buyers on {HOT_WORKERS} threads in {took:.1f}s: 1 x 200 ({winner}),"
        f" {len(refused)} x 409, SOLD to the winner, {charges}"
    )


def hold_expiry(cx: ChaosContext) -> str:
    """A hold nobody pays for expires; confirming it afterwards is refused."""
    hold = cx.env.settings.service.hold_seconds
    if hold > SHORT_HOLD_S:
        raise Skip(f"hold is {hold:g}s here; needs [service] hold_seconds <= {SHORT_HOLD_S:g}")
    waited, racing = cx.seat("hold"), cx.seat("hold")
    client = cx.client()
    try:
        until = 0.0
        for t in (waited, racing):
            resp = client.call("Ticket", "reserve", "idler", key=t, timeout=30)
            expect(resp.status_code == 200, f"reserve answered {resp.status_code}: {resp.text}")
            until = max(until, resp.json()["reservedUntil"] / 1000)
        # Right at expiry, before or after the cleanup timer: refused either way.
        time.sleep(max(0.0, until - time.time() + 0.05))
        early = client.call("Ticket", "confirm", "idler", key=racing, timeout=30)
        expect(early.status_code == 409, f"confirm at expiry answered {early.status_code}")
        freed = poll_until(
            lambda: ticket_state(client, waited)["status"] == "AVAILABLE", 10.0, 0.25
        )
        expect(freed, "the hold never expired")
        lag = time.time() - until
        late = client.call("Ticket", "confirm", "idler", key=waited, timeout=30)
        expect(late.status_code == 409, f"confirm after expiry answered {late.status_code}")
        for t in (waited, racing):
            state = ticket_state(client, t)
            expect(state["status"] == "AVAILABLE", f"{t} is {state['status']} after the hold")
        resp = client.call("Ticket", "reserve", "next-in-line", key=waited, timeout=30)
        expect(resp.status_code == 200, f"a new hold after expiry answered {resp.status_code}")
        client.call("Ticket", "release", "next-in-line", key=waited, timeout=30)
    finally:
        client.close()
    return (
        f"{hold:g}s holds: AVAILABLE {lag:.1f}s after expiry; confirm at expiry 409"
        f" ({_message(early)}), after expiry 409; seat can be held again"
    )


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json().get("message", ""))[:40]
    except ValueError:
        return resp.text[:40]
