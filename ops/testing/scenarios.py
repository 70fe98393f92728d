"""`invoke test-all`: the contract scenarios through an environment's ingress (with its
token). Seat ids are unique per run, so it runs again and again against a live
environment without a reset."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

import httpx

from ops.base.environments import Environment
from ops.base.ids import fresh_seat, new_run_id
from ops.clients.admin import IngressClient
from ops.testing.checks import Outcome, Skip, expect, run_checks, write_junit

SHORT_HOLD_S = 10.0


class Scenarios:
    """The checks, bound to one environment and one run id."""

    def __init__(self, env: Environment, *, buyers: int = 20, bulk: int = 40) -> None:
        self.env = env
        self.run_id = new_run_id()
        self.buyers = buyers
        self.bulk = bulk
        self.ingress = IngressClient(env.ingress.url, env.token)

    # --- helpers -----------------------------------------------------------------

    def seat(self, label: str) -> str:
        return fresh_seat(f"testall-{self.run_id}:", label)

    def client(self, i: int) -> IngressClient:
        """A fresh client for the i-th concurrent buyer; a cluster's nodes take turns."""
        urls = self.env.ingress_urls
        return IngressClient(urls[i % len(urls)], self.env.token)

    def checkout(
        self, ticket: str, user: str, method: str | None = None, client: IngressClient | None = None
    ) -> httpx.Response:
        return (client or self.ingress).checkout(ticket, user, method)

    def ticket(self, ticket: str) -> dict[str, Any]:
        resp = self.ingress.call("Ticket", "get", key=ticket)
        expect(
            resp.status_code == 200, f"Ticket/get answered {resp.status_code}: {resp.text[:200]}"
        )
        data: dict[str, Any] = resp.json()
        return data

    # --- scenarios -------------------------------------------------------------------

    def happy_path(self) -> str:
        t = self.seat("happy")
        started = time.monotonic()
        resp = self.checkout(t, "alice", "card_success")
        took = (time.monotonic() - started) * 1000
        expect(resp.status_code == 200, f"checkout answered {resp.status_code}: {resp.text[:200]}")
        expect(resp.json() == "Booking Confirmed", f"body {resp.text[:100]}")
        state = self.ticket(t)
        expect(state["status"] == "SOLD" and state["reservedBy"] == "alice", f"seat is {state}")
        return f"SOLD to alice in {took:.0f} ms"

    def saga_compensation(self) -> str:
        t = self.seat("decline")
        resp = self.checkout(t, "bob", "card_decline")
        expect(resp.status_code == 402, f"decline answered {resp.status_code}")
        expect("Payment failed" in resp.text and "Payment declined" in resp.text, resp.text[:200])
        state = self.ticket(t)
        expect(state["status"] == "AVAILABLE", f"seat left {state['status']}")
        return "402 Payment declined, seat released"

    def double_booking(self) -> str:
        t = self.seat("double")
        first = self.checkout(t, "carol")
        expect(first.status_code == 200, f"first buyer got {first.status_code}")
        second = self.checkout(t, "dave")
        expect(second.status_code == 409, f"second buyer got {second.status_code}")
        expect("Ticket already sold" in second.text, second.text[:200])
        expect(self.ticket(t)["reservedBy"] == "carol", "seat changed hands")
        return "second buyer refused with 409 Ticket already sold"

    def fresh_seat(self) -> str:
        t = self.seat("fresh")
        empty = self.ingress.call("Ticket", "get", key=t)
        braces = self.ingress.call("Ticket", "get", {}, key=t)
        wanted = {"status": "AVAILABLE", "reservedBy": None, "reservedUntil": None}
        expect(empty.status_code == 200 and empty.json() == wanted, f"empty body: {empty.text}")
        expect(braces.status_code == 200 and braces.json() == wanted, f"{{}} body: {braces.text}")
        return "AVAILABLE with an empty body and with {}"

    def concurrent_buyers(self) -> str:
        t = self.seat("hot")

        def buy(i: int) -> httpx.Response:
            client = self.client(i)
            try:
                return self.checkout(t, f"buyer-{i}", client=client)
            finally:
                client.close()

        with ThreadPoolExecutor(max_workers=min(self.buyers, 32)) as pool:
            answers = list(pool.map(buy, range(self.buyers)))
        winners = [i for i, r in enumerate(answers) if r.status_code == 200]
        refused = [r for r in answers if r.status_code == 409]
        expect(len(winners) == 1, f"{len(winners)} winners among {self.buyers}")
        expect(
            len(refused) == self.buyers - 1, f"answers {sorted({r.status_code for r in answers})}"
        )
        state = self.ticket(t)
        expect(
            state["status"] == "SOLD" and state["reservedBy"] == f"buyer-{winners[0]}", f"{state}"
        )
        return f"{self.buyers} buyers: 1 confirmed, {len(refused)} refused with 409"

    def gateway_error(self) -> str:
        t = self.seat("gwerror")
        started = time.monotonic()
        resp = self.checkout(t, "erin", "card_error")
        took = time.monotonic() - started
        expect(resp.status_code in (502, 503), f"gateway error answered {resp.status_code}")
        expect("Payment failed" in resp.text and "Gateway timeout" in resp.text, resp.text[:200])
        expect(self.ticket(t)["status"] == "AVAILABLE", "seat not released")
        return f"{resp.status_code} Gateway timeout after {took:.1f}s, seat released"

    def bulk_bookings(self) -> str:
        seats = [self.seat(f"bulk{i}") for i in range(self.bulk)]

        def buy(t: str) -> int:
            client = self.client(seats.index(t))
            try:
                return self.checkout(t, f"bulk-{t[-6:]}", client=client).status_code
            finally:
                client.close()

        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            codes = list(pool.map(buy, seats))
        took = time.monotonic() - started
        expect(codes.count(200) == len(seats), f"answers {sorted(set(codes))}")
        sold = sum(self.ticket(t)["status"] == "SOLD" for t in seats)
        expect(sold == len(seats), f"{sold}/{len(seats)} seats SOLD")
        return f"{len(seats)} bookings in {took:.1f}s ({len(seats) / took:.0f}/s), all SOLD"

    def bad_input(self) -> str:
        t = self.seat("bad")
        cases: list[tuple[bytes, str]] = [
            (b"{not json", "JSON"),
            (b"[1, 2]", "JSON object"),
            (b'{"userId": "u"}', "ticketId"),
            (b'{"ticketId": "' + t.encode() + b'"}', "userId"),
            (b'{"ticketId": "", "userId": "u"}', "ticketId"),
            (b'{"ticketId": 12, "userId": "u"}', "ticketId"),
            (
                b'{"ticketId": "' + t.encode() + b'", "userId": "u", "paymentMethodId": false}',
                "paymentMethodId",
            ),
        ]
        for raw, field in cases:
            started = time.monotonic()
            resp = self.ingress.call("Checkout", "process", raw=raw, timeout=10)
            expect(resp.status_code == 400, f"{raw[:40]!r} answered {resp.status_code}")
            expect(field in resp.text, f"{raw[:40]!r}: message does not name {field}: {resp.text}")
            expect(time.monotonic() - started < 3, f"{raw[:40]!r} took too long")
        expect(self.ticket(t)["status"] == "AVAILABLE", "bad input changed the seat")
        return f"{len(cases)} malformed bodies: 400 naming the field, nothing changed"

    def hold_expiry(self) -> str:
        hold = self.env.settings.service.hold_seconds
        if hold > SHORT_HOLD_S:
            raise Skip(f"hold is {hold:g}s here; set [service] hold_seconds <= {SHORT_HOLD_S:g}")
        t = self.seat("hold")
        resp = self.ingress.call("Ticket", "reserve", "frank", key=t)
        expect(resp.status_code == 200, f"reserve answered {resp.status_code}")
        until = resp.json()["reservedUntil"] / 1000
        deadline = until + 10
        while self.ticket(t)["status"] != "AVAILABLE" and time.time() < deadline:
            time.sleep(0.25)
        expect(self.ticket(t)["status"] == "AVAILABLE", "hold never expired")
        late = self.ingress.call("Ticket", "confirm", "frank", key=t)
        expect(late.status_code == 409, f"confirm after expiry answered {late.status_code}")
        return (
            f"seat AVAILABLE {time.time() - until:.1f}s after its {hold:g}s hold; late confirm 409"
        )

    def all(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("happy-path", self.happy_path),
            ("saga-compensation", self.saga_compensation),
            ("double-booking", self.double_booking),
            ("fresh-seat", self.fresh_seat),
            ("concurrent-buyers", self.concurrent_buyers),
            ("gateway-error", self.gateway_error),
            ("bulk-bookings", self.bulk_bookings),
            ("bad-input", self.bad_input),
            ("hold-expiry", self.hold_expiry),
        ]


def test_all(
    env: Environment, *, junit: Path | None = None, out: TextIO | None = None
) -> list[Outcome]:
    """Every scenario against `env`; JUnit XML on request."""
    scenarios = Scenarios(env)
    stream = out or sys.stdout
    print(f"test-all {env.name}: ingress {env.ingress.url}, run {scenarios.run_id}", file=stream)
    try:
        outcomes = run_checks(scenarios.all(), out=stream)
    finally:
        scenarios.ingress.close()
    if junit is not None:
        write_junit(outcomes, junit, f"nexus.test-all.{env.name}")
    return outcomes
