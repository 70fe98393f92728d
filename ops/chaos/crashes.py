"""Crashes: the service or restate-server SIGKILLed with work in flight, and a second
deploy under load; every accepted booking completes exactly once."""

from __future__ import annotations

import io
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ops.base.processes import poll_until
from ops.chaos.base import (
    CALL_TIMEOUT_S,
    ChaosContext,
    Reply,
    checkout,
    ensure_running,
    epoch,
    expect_audit,
    gateway_faults,
    invocations,
    kill_server,
    one_checkout,
    process_name,
    require_mock_gateway,
    require_process,
    restart,
    ticket_state,
)
from ops.operations.audit import read_tickets
from ops.release.stack import SERVICE, deploy
from ops.server.runtimes import SERVER
from ops.testing.checks import CheckFailed, expect

CRASH_BOOKINGS = 8  # service-crash: checkouts in flight when the service dies
CRASH_LATENCY_MS = 2000  # ... held at the gateway this long, so the kill lands mid-charge
SERVER_DOWNTIME_S = 1.5  # server-crash: how long restate-server stays dead
LOAD_WORKERS = 6  # server-crash and restart-idempotence: threads of checkouts
LOAD_SECONDS = 8.0
LOAD_MAX_PER_WORKER = 300


def service_crash(cx: ChaosContext) -> str:
    """SIGKILL the service while charges are in flight: every booking completes, once."""
    require_process(cx, SERVICE)
    require_mock_gateway(cx)
    seats = [cx.seat("svc-crash") for _ in range(CRASH_BOOKINGS)]
    with gateway_faults(cx) as gw, ThreadPoolExecutor(CRASH_BOOKINGS) as pool:
        try:
            gw.configure(latency_ms=CRASH_LATENCY_MS)
            before = gw.attempts()
            futures = [pool.submit(one_checkout, cx, t, f"crash-{i}") for i, t in enumerate(seats)]
            reached = poll_until(lambda: gw.attempts() >= before + len(seats), 15.0, 0.02)
            in_flight = gw.attempts() - before
            expect(in_flight > 0, "no charge reached the gateway within 15 s")
            killed_at = time.monotonic()
            pid = cx.stack.release.kill_instance(process_name(cx, SERVICE))
            expect(pid is not None, "the service was not running")
            back = restart(cx, SERVICE)
            gw.configure(latency_ms=0)
            answers = [f.result(timeout=CALL_TIMEOUT_S + 10) for f in futures]
            recovered = time.monotonic() - killed_at
        finally:
            ensure_running(cx, SERVICE)
        replayed = gw.attempts() - before
        client = cx.client()
        try:
            for i, (t, a) in enumerate(zip(seats, answers, strict=True)):
                expect(a.status == 200, f"booking {t} answered {a.brief()}")
                live = gw.live_charges(t)
                expect(len(live) == 1, f"{t}: {len(live)} live charges")
                expect(live[0].get("userId") == f"crash-{i}", f"{t}: charged to the wrong user")
                state = ticket_state(client, t)
                expect(
                    state["status"] == "SOLD" and state["reservedBy"] == f"crash-{i}",
                    f"{t} is {state}",
                )
        finally:
            client.close()
    mails = mails_for(cx, seats)
    expect(all(n == 1 for n in mails.values()), f"mails per booking: {mails}")
    figures = expect_audit(cx, f"{cx.prefix}svc-crash")
    note = "" if reached else " (not all were in flight)"
    return (
        f"killed service ({pid}) with {in_flight}/{len(seats)} charges in flight{note};"
        f" back in {back:.1f}s; {len(seats)}/{len(seats)} bookings 200,"
        f" {len(seats)} charges and {sum(mails.values())} mails (1 each,"
        f" {replayed} gateway attempts); recovered {recovered:.1f}s after the kill; {figures}"
    )


def mails_for(cx: ChaosContext, seats: list[str]) -> dict[str, int]:
    """Confirmation mails in the local outbox, per seat."""
    counts = dict.fromkeys(seats, 0)
    for mail in (Path(cx.stack.outbox) / "new").glob("*.eml"):
        text = mail.read_text(errors="replace")
        for seat in seats:
            if f"seat {seat} is booked" in text:
                counts[seat] += 1
    return counts


# --- load threads for server-crash and restart-idempotence ----------------------------------


@dataclass
class LoadRequest:
    """One checkout of a background load, with the key to re-send it safely."""

    seat: str
    user: str
    key: str
    sent_at: float
    first: Reply
    final: Reply | None = None


class BackgroundLoad:
    """Threads booking unique seats until stopped (bounded by time and count)."""

    def __init__(self, cx: ChaosContext, label: str, workers: int, max_seconds: float) -> None:
        self.cx = cx
        self.label = label
        self.key_prefix = f"chaos-{cx.run_id}-{label}-"
        self.requests: list[LoadRequest] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._threads = [
            threading.Thread(target=self._work, args=(i,), daemon=True) for i in range(workers)
        ]

    def start(self) -> BackgroundLoad:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> list[LoadRequest]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=CALL_TIMEOUT_S)
        with self._lock:
            return list(self.requests)

    def _work(self, worker: int) -> None:
        client = self.cx.client(timeout=30.0)
        try:
            for n in range(LOAD_MAX_PER_WORKER):
                if self._stop.is_set() or time.monotonic() > self._deadline:
                    return
                seat = self.cx.seat(self.label)
                user = f"{self.label}-{worker}-{n}"
                key = f"{self.key_prefix}{uuid.uuid4().hex}"
                sent = time.monotonic()
                answer = checkout(client, seat, user, idempotency_key=key, timeout=30.0)
                with self._lock:
                    self.requests.append(LoadRequest(seat, user, key, sent, answer))
                if not answer.definitive:
                    time.sleep(0.25)  # a client backs off while the server is away
        finally:
            client.close()


def _resend(cx: ChaosContext, requests: list[LoadRequest]) -> None:
    """Re-send every undecided request with its own Idempotency-Key (a few tries each)."""

    def settle(req: LoadRequest) -> None:
        client = cx.client()
        try:
            for _ in range(3):
                req.final = checkout(client, req.seat, req.user, idempotency_key=req.key)
                if req.final.definitive:
                    return
                time.sleep(1.0)
        finally:
            client.close()

    for req in requests:
        if req.first.definitive:
            req.final = req.first
    with ThreadPoolExecutor(LOAD_WORKERS) as pool:
        list(pool.map(settle, [r for r in requests if r.final is None]))


def server_crash(cx: ChaosContext) -> str:
    """SIGKILL restate-server under load; every accepted booking completes after restart."""
    require_process(cx, SERVER)
    label = "srv-crash"
    load = BackgroundLoad(cx, label, LOAD_WORKERS, max_seconds=120.0).start()
    killed_at, killed_wall = time.monotonic(), time.time()
    try:
        time.sleep(2.5)
        killed = kill_server(cx)
        killed_at, killed_wall = time.monotonic(), time.time()
        expect(killed is not None, "restate-server was not running")
        time.sleep(SERVER_DOWNTIME_S)  # clients meet a closed port meanwhile
        restart(cx, SERVER)
        back = time.monotonic() - killed_at
        time.sleep(2.5)
    finally:
        requests = load.stop()
        ensure_running(cx, SERVER)
    undecided = [r for r in requests if not r.first.definitive]
    _resend(cx, requests)
    settled = time.monotonic() - killed_at
    after = [r for r in requests if r.sent_at > killed_at and r.first.status == 200]
    first_ok = min((r.sent_at + r.first.seconds for r in after), default=0.0) - killed_at
    errors = Counter(str(r.first.status or "connection error") for r in undecided)
    bad = [r for r in requests if r.final is None or r.final.status not in (200, 409)]
    if bad:
        example = bad[0].final.brief() if bad[0].final else "never re-sent"
        raise CheckFailed(f"{len(bad)} requests still undecided, e.g. {example}")
    rows = invocations(cx, load.key_prefix)
    open_ = [r for r in rows if r["status"] != "completed"]
    expect(not open_, f"{len(open_)} invocations not completed, e.g. {open_[:1]}")
    retried = {r.key for r in undecided}
    accepted = sum(
        r["idempotency_key"] in retried and epoch(r["created_at"]) < killed_wall for r in rows
    )
    admin = cx.admin()
    try:
        seats = read_tickets(admin, f"{cx.prefix}{label}")
    finally:
        admin.close()
    reserved = [s for s, states in seats.items() if states[-1].status.value == "RESERVED"]
    expect(not reserved, f"{len(reserved)} seats left RESERVED, e.g. {reserved[:1]}")
    figures = expect_audit(cx, f"{cx.prefix}{label}")
    ok = sum(r.final is not None and r.final.status == 200 for r in requests)
    conflicts = sum(r.final is not None and r.final.status == 409 for r in requests)
    expect(len(seats) >= ok, f"{ok} bookings confirmed but only {len(seats)} seats have state")
    seen = ", ".join(f"{n} x {k}" for k, n in sorted(errors.items())) or "none"
    return (
        f"killed restate-server {killed} under {LOAD_WORKERS} threads; healthy"
        f" {back:.1f}s after the kill, first new booking after {first_ok:.1f}s;"
        f" {len(requests)} requests, errors in the crash window: {seen}; re-sent"
        f" {len(undecided)} with their Idempotency-Key ({accepted} had been accepted before"
        f" the kill): all decided ({ok} x 200, {conflicts} x 409) {settled:.1f}s after the"
        f" kill, no invocation left open; {figures}"
    )


def restart_idempotence(cx: ChaosContext) -> str:
    """A second deploy under load changes nothing and drops no request."""
    load = BackgroundLoad(cx, "redeploy", LOAD_WORKERS, max_seconds=LOAD_SECONDS + 30).start()
    out = io.StringIO()
    try:
        time.sleep(1.5)
        started = time.monotonic()
        play = deploy(cx.env, out=out)
        took = time.monotonic() - started
        time.sleep(max(0.0, LOAD_SECONDS - 1.5 - took))
    finally:
        requests = load.stop()
    counts = play.counts()
    recap = out.getvalue().strip().splitlines()[-1]
    expect(counts["failed"] == 0 and counts["changed"] == 0, f"second deploy: {recap}")
    bad = [r for r in requests if r.first.status != 200]
    if bad:
        raise CheckFailed(
            f"{len(bad)}/{len(requests)} bookings not confirmed, e.g. {bad[0].first.brief()}"
        )
    expect(len(requests) > 0, "the load sent nothing")
    figures = expect_audit(cx, f"{cx.prefix}redeploy")
    return (
        f"deploy under load in {took:.1f}s: changed=0 failed=0 ok={counts['ok']};"
        f" {len(requests)}/{len(requests)} bookings 200, no connection errors; {figures}"
    )
