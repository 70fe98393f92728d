"""Buyers booking fresh seats through every node of a cluster while something happens to
it (a node killed, the cluster rolled to another version), and the proof afterwards that
no booking was lost."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ops.base.environments import Environment
from ops.base.errors import ApiError, TokenRejected
from ops.clients.admin import IngressClient
from ops.operations.audit import AuditReport, audit


@dataclass
class Booking:
    """One checkout of the load, followed to a definitive answer."""

    seat: str
    user: str
    key: str
    status: int = 0
    latency_ms: float = 0.0
    errors: int = 0
    started: float = 0.0
    answer: str = ""  # the body of a definitive answer other than 200, and who gave it


@dataclass
class ClusterLoad:
    """`workers` buyers for at most `duration` seconds (or until the action is over and
    `stop` is set). Every request carries an Idempotency-Key; one that gets no answer
    (connection error, 5xx, or the 404 of a node still loading the registered services)
    is re-sent with the same key to the next node until one answers, for up to 90 s, so
    every accepted invocation is followed to its end."""

    env: Environment
    urls: list[str]
    prefix: str
    workers: int = 4
    duration: float = 24.0
    bookings: list[Booking] = field(default_factory=list)
    errors_at: dict[str, int] = field(default_factory=dict)
    answers: list[tuple[float, str]] = field(default_factory=list)  # (when, node's ingress)
    events: dict[str, float] = field(default_factory=dict)
    started_at: float = 0.0
    stop: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mark(self, event: str) -> None:
        """Record when `event` happened, in seconds since the load started."""
        self.events[event] = time.monotonic() - self.started_at

    def run(self, action: Callable[[ClusterLoad], None]) -> None:
        """Start the buyers, run `action` beside them, then let the buyers finish."""
        self.errors_at = {url: 0 for url in self.urls}
        self.started_at = time.monotonic()
        with ThreadPoolExecutor(self.workers) as pool:
            futures = [pool.submit(self._buyer, w) for w in range(self.workers)]
            try:
                action(self)
            finally:
                self.stop = True
                for future in futures:
                    future.result(timeout=self.duration + 120)

    def _buyer(self, w: int) -> None:
        clients = [IngressClient(url, self.env.token, timeout=30.0) for url in self.urls]
        i = 0
        try:
            while not self.stop and time.monotonic() - self.started_at < self.duration:
                run = self.prefix.rstrip(":")
                b = Booking(f"{self.prefix}w{w}-{i}", f"user-{w}-{i}", f"{run}-{w}-{i}")
                b.started = time.monotonic()
                node = (w + i) % len(self.urls)
                deadline = b.started + 90
                while time.monotonic() < deadline:
                    try:
                        resp = clients[node].checkout(b.seat, b.user, idempotency_key=b.key)
                        if resp.status_code < 500 and resp.status_code != 404:
                            b.status = resp.status_code
                            if resp.status_code != 200:
                                since = time.monotonic() - self.started_at
                                b.answer = (f"{resp.text[:160]} from {self.urls[node]} at"
                                            f" {since:.1f}s, attempt {b.errors + 1}")  # fmt: skip
                            with self.lock:
                                self.answers.append((time.monotonic(), self.urls[node]))
                            break
                    except TokenRejected:
                        raise
                    except ApiError:  # the node is down: no answer
                        pass
                    b.errors += 1
                    with self.lock:
                        self.errors_at[self.urls[node]] += 1
                    node = (node + 1) % len(self.urls)
                    time.sleep(0.2)
                b.latency_ms = (time.monotonic() - b.started) * 1000
                with self.lock:
                    self.bookings.append(b)
                i += 1
        finally:
            for client in clients:
                client.close()

    def between(self, first: str, last: str) -> list[Booking]:
        """The bookings started between two events."""
        lo, hi = self.events[first], self.events[last]
        return [b for b in self.bookings if lo <= b.started - self.started_at <= hi]

    def before(self, event: str) -> list[Booking]:
        return [b for b in self.bookings if b.started - self.started_at < self.events[event]]

    def outcome(self, read_through: str | None = None) -> tuple[str, list[str], AuditReport]:
        """(counts, problems, audit): every confirmed booking SOLD to its buyer (read
        through `read_through`, else the first node), every booking answered, nothing but
        200 on a fresh seat, and a clean audit."""
        unresolved = [b for b in self.bookings if b.status == 0]
        confirmed = [b for b in self.bookings if b.status == 200]
        lost = lost_bookings(self.env, read_through or self.urls[0], confirmed)
        report = audit(self.env, prefix=self.prefix)
        counts = (
            f"{len(self.bookings)} bookings, {len(confirmed)} confirmed,"
            f" {len(unresolved)} unresolved, {len(lost)} lost"
        )
        problems = [
            *lost,
            *(f"{b.seat}: no definitive answer" for b in unresolved),
            *report.violations,
        ]
        odd = [b for b in self.bookings if b.status not in (0, 200)]
        if odd:
            problems.append(f"answers other than 200 on fresh seats: {len(odd)}")
            problems += [f"{b.seat}: {b.status} {b.answer}" for b in odd]
        return counts, problems, report


def p99(bookings: list[Booking]) -> float:
    values = sorted(b.latency_ms for b in bookings)
    return values[min(len(values) - 1, int(len(values) * 0.99))] if values else 0.0


def lost_bookings(env: Environment, ingress_url: str, confirmed: list[Booking]) -> list[str]:
    """Confirmed bookings whose seat is not SOLD to their buyer, read through `ingress_url`."""
    lost: list[str] = []
    checker = IngressClient(ingress_url, env.token, timeout=30.0)
    try:
        for b in confirmed:
            state = checker.call("Ticket", "get", key=b.seat).json()
            if state.get("status") != "SOLD" or state.get("reservedBy") != b.user:
                lost.append(f"{b.seat}: confirmed to {b.user} but {state}")
    finally:
        checker.close()
    return lost
