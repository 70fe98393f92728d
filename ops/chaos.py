"""`invoke chaos`: fault injection against one environment.

Each scenario injects its own faults on loopback (a killed process, a slow or failing
payment gateway, a crowd on one seat, malformed requests, a redeploy under load), is
bounded in time and requests, undoes its faults in `finally` (gateway latency and outage
restored, killed processes restarted) and returns its figures on one line. Seat ids are
unique per run (`chaos-<run>:...`), so it runs again and again against a live stack.
Scenarios that cannot apply to an environment are skipped with the reason."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import quote

import httpx

from ops.admin import AdminClient, GatewayClient, IngressClient
from ops.audit import audit, read_tickets
from ops.checks import CheckFailed, Outcome, Skip, expect, run_checks
from ops.cluster import ClusterRuntime
from ops.environments import Environment
from ops.errors import ApiError, NexusError
from ops.processes import http_ready, poll_until
from ops.runtimes import SERVER, BinaryRuntime, ensure_process, wait_until
from ops.scenarios import SHORT_HOLD_S
from ops.stack import SERVICE, Stack, deploy
from ops.steps import Context
from service.config import settings as service_defaults
from service.payment import backoff_delays

# --- knobs ------------------------------------------------------------------------------

CRASH_BOOKINGS = 8  # service-crash: checkouts in flight when the service dies
CRASH_LATENCY_MS = 2000  # ... held at the gateway this long, so the kill lands mid-charge
SHORT_OUTAGE_S = 1.0  # shorter than the payment client's retry budget (~1.75 s)
LONG_OUTAGE_S = 6.0  # longer than it
OUTAGE_BOOKINGS = 4
HOT_BUYERS = 100
HOT_WORKERS = 32
SERVER_DOWNTIME_S = 1.5  # server-crash: how long restate-server stays dead
LOAD_WORKERS = 6  # server-crash and restart-idempotence: threads of checkouts
LOAD_SECONDS = 8.0
LOAD_MAX_PER_WORKER = 300
BAD_INPUT_BUDGET_S = 1.0  # every malformed request answered within this
BAD_INPUT_TIMEOUT_S = 2.0  # no answer by then counts as a hang
FUZZ_EXAMPLES = 120  # hypothesis-generated bodies on top of the fixed corpus
CALL_TIMEOUT_S = 90.0


def payment_budget_s() -> float:
    """How long the payment client keeps retrying a failing gateway (sum of its pauses)."""
    return sum(
        backoff_delays(service_defaults.payment_attempts, service_defaults.payment_backoff_s)
    )


# --- context and small clients ------------------------------------------------------------


@dataclass
class ChaosContext:
    """One chaos run against one environment: its stack, run id and output."""

    env: Environment
    out: TextIO = field(default_factory=lambda: sys.stdout)
    run_id: str = field(default_factory=lambda: f"{time.strftime('%H%M%S')}{uuid.uuid4().hex[:6]}")
    details: list[str] = field(default_factory=list)  # the last scenario's full findings

    @cached_property
    def stack(self) -> Stack:
        return Stack(self.env)

    @property
    def prefix(self) -> str:
        """Every seat of this run starts with it."""
        return f"chaos-{self.run_id}:"

    def seat(self, label: str) -> str:
        """A fresh seat id of this run."""
        return f"{self.prefix}{label}-{uuid.uuid4().hex[:8]}"

    def client(self, timeout: float = CALL_TIMEOUT_S) -> IngressClient:
        """A new ingress client (one per thread; close it)."""
        return IngressClient(self.env.ingress.url, self.env.token, timeout=timeout)

    def admin(self) -> AdminClient:
        return AdminClient(self.env.admin.url, self.env.token)


@dataclass
class Answer:
    """One HTTP answer, or its absence (`status` None: refused, reset or timed out)."""

    status: int | None
    text: str
    seconds: float

    @property
    def definitive(self) -> bool:
        """A result the caller can act on: not a transport error, not a 5xx."""
        return self.status is not None and self.status < 500

    def brief(self) -> str:
        return f"{self.status or 'no answer'} {self.text[:160]}"


def send(
    client: IngressClient,
    path: str,
    body: bytes | None,
    *,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = "application/json",
    timeout: float = CALL_TIMEOUT_S,
) -> Answer:
    """POST `body` to an ingress path; transport failures become `Answer(None, ...)`."""
    hdrs = dict(headers or {})
    if content_type and body:
        hdrs.setdefault("Content-Type", content_type)
    started = time.monotonic()
    try:
        resp = client.request("POST", path, content=body, headers=hdrs, timeout=timeout)
    except ApiError as exc:  # TokenRejected (401/403) is an answer, not a transport error
        status = exc.status if exc.status else None
        return Answer(status, str(exc), time.monotonic() - started)
    return Answer(resp.status_code, resp.text, time.monotonic() - started)


def checkout(
    client: IngressClient,
    ticket: str,
    user: str,
    *,
    method: str = "card_success",
    idempotency_key: str | None = None,
    timeout: float = CALL_TIMEOUT_S,
) -> Answer:
    """`POST /Checkout/process`, optionally with an `Idempotency-Key`."""
    body = json.dumps({"ticketId": ticket, "userId": user, "paymentMethodId": method}).encode()
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
    return send(client, "/Checkout/process", body, headers=headers, timeout=timeout)


def ticket_state(client: IngressClient, ticket: str) -> dict[str, Any]:
    """`Ticket/get` of one seat."""
    resp = client.call("Ticket", "get", key=ticket, timeout=30)
    expect(resp.status_code == 200, f"Ticket/get {ticket} answered {resp.status_code}")
    data: dict[str, Any] = resp.json()
    return data


@contextmanager
def gateway_faults(cx: ChaosContext) -> Iterator[GatewayClient]:
    """The mock gateway, with its latency restored and any outage ended afterwards."""
    require_mock_gateway(cx)
    gw = GatewayClient(cx.env.gateway.url, timeout=10.0)
    try:
        saved = float(gw.config().get("latency_ms", 0.0))
    except NexusError:
        gw.close()
        raise
    try:
        yield gw
    finally:
        try:
            gw.configure(latency_ms=saved, outage_seconds=0)
        finally:
            gw.close()


# --- preconditions -----------------------------------------------------------------------


def require_mock_gateway(cx: ChaosContext) -> None:
    if cx.env.gateway_mode != "mock":
        raise Skip(f"needs the mock payment gateway (gateway mode is {cx.env.gateway_mode!r})")


def require_process(cx: ChaosContext, name: str) -> None:
    """A process this toolkit runs here, with a live PID file: ours to kill."""
    env = cx.env
    if name == SERVER and env.runtime != "binary":
        raise Skip(f"killing restate-server needs runtime = binary (here: {env.runtime})")
    if name == SERVICE:
        if env.runtime == "external":
            raise Skip("the server is external: killing the service here proves nothing local")
        if env.service_mode != "process":
            raise Skip(f"the toolkit does not run the service (mode {env.service_mode!r})")
    info = cx.stack.procs.info(name)
    if not info.alive:
        raise Skip(f"{name} is not running under the toolkit's PID files: deploy {env.name} first")


def expect_audit(cx: ChaosContext, prefix: str) -> str:
    """The booking invariants over one scenario's seats; their figures."""
    report = audit(cx.env, prefix=prefix)
    expect(report.ok, "; ".join(report.violations[:5]))
    return f"audit ok ({report.checked.get('sold', 0)} sold)"


def restart(cx: ChaosContext, name: str) -> float:
    """Bring a killed process back with the toolkit's own spec; seconds it took."""
    started = time.monotonic()
    procs = cx.stack.procs
    procs.stop(name)  # reaps it, waits for its ports, drops the stale PID file
    runtime = cx.stack.runtime
    if name == SERVER:
        if not isinstance(runtime, BinaryRuntime):
            raise NexusError(f"cannot restart restate-server of runtime {cx.env.runtime}")
        spec = runtime.spec()
    else:
        spec = cx.stack.service_spec()
    ensure_process(procs, spec, Context())
    return time.monotonic() - started


def ensure_running(cx: ChaosContext, name: str) -> None:
    """Cleanup: restart `name` if a scenario left it dead."""
    if not cx.stack.procs.info(name).alive:
        restart(cx, name)


# --- 1. service-crash --------------------------------------------------------------------


def service_crash(cx: ChaosContext) -> str:
    """SIGKILL the service while charges are in flight: every booking completes, once."""
    require_process(cx, SERVICE)
    require_mock_gateway(cx)
    seats = [cx.seat("svc-crash") for _ in range(CRASH_BOOKINGS)]
    with gateway_faults(cx) as gw, ThreadPoolExecutor(CRASH_BOOKINGS) as pool:
        try:
            gw.configure(latency_ms=CRASH_LATENCY_MS)
            before = gw.attempts()
            futures = [pool.submit(_one_checkout, cx, t, f"crash-{i}") for i, t in enumerate(seats)]
            reached = poll_until(lambda: gw.attempts() >= before + len(seats), 15.0, 0.02)
            in_flight = gw.attempts() - before
            expect(in_flight > 0, "no charge reached the gateway within 15 s")
            killed_at = time.monotonic()
            pid = cx.stack.procs.kill(SERVICE)
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
        f"killed service pid {pid} with {in_flight}/{len(seats)} charges in flight{note};"
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


def _one_checkout(cx: ChaosContext, ticket: str, user: str) -> Answer:
    client = cx.client()
    try:
        return checkout(client, ticket, user)
    finally:
        client.close()


# --- 2. gateway-outage -------------------------------------------------------------------


def gateway_outage(cx: ChaosContext) -> str:
    """A short outage is ridden out by retries; a long one ends in 502 and released seats."""
    require_mock_gateway(cx)
    budget = payment_budget_s()
    client = cx.client()
    try:
        with gateway_faults(cx) as gw, ThreadPoolExecutor(OUTAGE_BOOKINGS) as pool:
            gw.configure(latency_ms=0)
            # (a) short outage: the retries outlast it
            short = [cx.seat("gw-short") for _ in range(OUTAGE_BOOKINGS)]
            before = gw.attempts()
            gw.configure(outage_seconds=SHORT_OUTAGE_S)
            started = time.monotonic()
            answers = list(pool.map(lambda t: _one_checkout(cx, t, "outage-a"), short))
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
            answers = list(pool.map(lambda t: _one_checkout(cx, t, "outage-b"), long))
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


# --- load threads for server-crash and restart-idempotence ----------------------------------


@dataclass
class LoadRequest:
    """One checkout of a background load, with the key to re-send it safely."""

    seat: str
    user: str
    key: str
    sent_at: float
    first: Answer
    final: Answer | None = None


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


# --- 3. server-crash ---------------------------------------------------------------------


def server_crash(cx: ChaosContext) -> str:
    """SIGKILL restate-server under load; every accepted booking completes after restart."""
    require_process(cx, SERVER)
    label = "srv-crash"
    load = BackgroundLoad(cx, label, LOAD_WORKERS, max_seconds=120.0).start()
    killed_at, killed_wall = time.monotonic(), time.time()
    try:
        time.sleep(2.5)
        pid = cx.stack.procs.kill(SERVER)
        killed_at, killed_wall = time.monotonic(), time.time()
        expect(pid is not None, "restate-server was not running")
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
    rows = _invocations(cx, load.key_prefix)
    open_ = [r for r in rows if r["status"] != "completed"]
    expect(not open_, f"{len(open_)} invocations not completed, e.g. {open_[:1]}")
    retried = {r.key for r in undecided}
    accepted = sum(
        r["idempotency_key"] in retried and _epoch(r["created_at"]) < killed_wall for r in rows
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
        f"killed restate-server pid {pid} under {LOAD_WORKERS} threads; healthy"
        f" {back:.1f}s after the kill, first new booking after {first_ok:.1f}s;"
        f" {len(requests)} requests, errors in the crash window: {seen}; re-sent"
        f" {len(undecided)} with their Idempotency-Key ({accepted} had been accepted before"
        f" the kill): all decided ({ok} x 200, {conflicts} x 409) {settled:.1f}s after the"
        f" kill, no invocation left open; {figures}"
    )


def _invocations(cx: ChaosContext, key_prefix: str) -> list[dict[str, Any]]:
    """Restate's invocations whose Idempotency-Key starts with `key_prefix`."""
    escaped = key_prefix.replace("'", "''")
    admin = cx.admin()
    try:
        return admin.query(
            "SELECT id, idempotency_key, status, created_at FROM sys_invocation"
            f" WHERE starts_with(idempotency_key, '{escaped}')"
        )
    finally:
        admin.close()


def _epoch(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 time as Restate's SQL prints it."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


# --- 4. hot-seat -------------------------------------------------------------------------


def hot_seat(cx: ChaosContext) -> str:
    """A crowd on one seat: one winner, everyone else 409, one charge."""
    t = cx.seat("hot")
    started = time.monotonic()
    with ThreadPoolExecutor(HOT_WORKERS) as pool:
        answers = list(pool.map(lambda i: _one_checkout(cx, t, f"fan-{i}"), range(HOT_BUYERS)))
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


# --- 5. hold-expiry ----------------------------------------------------------------------


def hold_expiry(cx: ChaosContext) -> str:
    """A hold nobody pays for expires; confirming it afterwards is refused."""
    hold = float(cx.env.get("service", "hold_seconds"))
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


# --- 6. bad-input ------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One malformed request: where it goes, what it carries, what it is."""

    path: str
    body: bytes
    label: str
    content_type: str | None = "application/json"
    tolerated_2xx: bool = False  # a read that may answer 200 with nothing to show


TICKET_HANDLERS = ("reserve", "confirm", "release", "cleanup", "get")
NEST = 50_000
MEGABYTE = 1_000_000


def _j(value: Any) -> bytes:
    """JSON with \\u escapes (lone surrogates become `"\\ud800"`, as a client may send)."""
    return json.dumps(value, ensure_ascii=True).encode()


def _quote_key(key: str) -> str:
    return quote(key.encode("utf-8", "surrogatepass"), safe="")


def unparseable_bodies() -> list[tuple[str, bytes]]:
    """Bodies no handler can read as JSON (or as a Python value)."""
    return [
        ("broken JSON", b'{"ticketId": "x", "userId": '),
        ("one brace", b"{"),
        ("trailing garbage", b'{"a": 1}}'),
        ("single quotes", b"{'ticketId': 'x'}"),
        ("invalid UTF-8", b'"\xff\xfe\xfd"'),
        ("raw control char in a string", b'"a\x01b"'),
        ("NUL byte", b"\x00"),
        (f"nested {NEST} deep", b"[" * NEST + b"]" * NEST),
        ("unterminated 1 MB string", b'{"pad": "' + b"x" * MEGABYTE),
        ("5000-digit integer", b"1" * 5000),
    ]


def id_values(long: str) -> list[tuple[str, Any]]:
    """JSON values that are not acceptable ids (never null, never an object)."""
    return [
        ("number", 12),
        ("float", 1.5e308),
        ("bool", True),
        ("list", ["u"]),
        ("empty string", ""),
        ("blank string", "   "),
        ("10000-char id", long),
        ("201-char id", "u" * 201),
        ("lone surrogate \\ud800", "\ud800"),
        ("lone surrogate \\udfff", "x\udfffy"),
        ("NUL", "a\u0000b"),
        ("escape sequence", "\u001b[31mred"),
        ("C1 control \\u0085", "a\u0085b"),
        ("DEL", "\u007f"),
        ("1 MB id", "x" * MEGABYTE),
    ]


def deep_field(name: str, extra: str = "") -> bytes:
    """`{..., name: [[[...]]]}` nested NEST deep."""
    return ("{" + extra + f'"{name}": ').encode() + b"[" * NEST + b"]" * NEST + b"}"


def bad_input_probes(prefix: str) -> list[Probe]:
    """The fixed corpus: every public handler, every kind of malformed input."""
    long = "x" * 10_000
    probes: list[Probe] = []
    seat = f"{prefix}bad-seat"
    ticket_path = f"/Ticket/{_quote_key(seat)}"
    # Unreadable bodies, everywhere.
    targets = [("/Checkout/process", False)]
    targets += [(f"{ticket_path}/{h}", False) for h in TICKET_HANDLERS]
    targets += [(f"/SeatMap/{_quote_key(prefix.rstrip(':'))}/get", False)]
    for path, _ in targets:
        for label, body in unparseable_bodies():
            probes.append(Probe(path, body, label))
        probes.append(Probe(path, b"{}", "text/plain body", content_type="text/plain"))
    # Checkout: wrong shapes, missing, wrong and malformed fields.
    good = {"ticketId": seat, "userId": "fuzzer", "paymentMethodId": "card_success"}
    for label, value in [("array", []), ("string", "x"), ("null", None), ("number", 42)]:
        probes.append(Probe("/Checkout/process", _j(value), f"body is {label}"))
    probes.append(Probe("/Checkout/process", b"", "empty body"))
    probes.append(Probe("/Checkout/process", b"{}", "empty object"))
    for name in ("ticketId", "userId"):
        probes.append(Probe("/Checkout/process", _j(_without(good, name)), f"missing {name}"))
        probes.append(Probe("/Checkout/process", _j({**good, name: None}), f"{name} null"))
        probes.append(Probe("/Checkout/process", deep_field(name), f"{name} nested {NEST} deep"))
    for name in ("ticketId", "userId", "paymentMethodId"):
        for label, value in [*id_values(long), ("object", {"id": 1})]:
            probes.append(Probe("/Checkout/process", _j({**good, name: value}), f"{name}: {label}"))
    # Ticket writes: a bad userId / holdId, bare or wrapped.
    for handler in ("reserve", "confirm", "release"):
        path = f"{ticket_path}/{handler}"
        for label, value in id_values(long):
            probes.append(Probe(path, _j(value), f"user {label}"))
            probes.append(Probe(path, _j({"userId": value}), f"userId {label}"))
        probes.append(Probe(path, _j({"userId": None}), "userId null"))
        probes.append(Probe(path, deep_field("userId"), f"userId nested {NEST} deep"))
    for handler in ("confirm", "release"):  # the holdId Checkout names its hold by
        path = f"{ticket_path}/{handler}"
        for label, value in id_values(long):
            probes.append(Probe(path, _j({"userId": "fuzzer", "holdId": value}), f"holdId {label}"))
        probes.append(Probe(path, _j({"holdId": None}), "holdId null"))
    for handler in ("reserve",):
        path = f"{ticket_path}/{handler}"
        for label, body in [("empty body", b""), ("null", b"null"), ("{}", b"{}")]:
            probes.append(Probe(path, body, label))
    path = f"{ticket_path}/cleanup"
    for label, value in id_values(long):
        probes.append(Probe(path, _j(value), f"hold {label}"))
        probes.append(Probe(path, _j({"holdId": value}), f"holdId {label}"))
    # Bad keys: a body each handler accepts, on a key no seat may have.
    keys = [
        ("10000-char key", long),
        ("201-char key", "k" * 201),
        ("empty key", ""),
        ("blank key", "   "),
        ("NUL in key", "a\u0000b"),
        ("newline in key", "a\nb"),
        ("C1 control in key", "\u0085"),
        ("lone surrogate in key (bad UTF-8)", "\ud800"),
    ]
    valid_body = {"reserve": _j("fuzzer"), "confirm": b"", "release": b"", "cleanup": b""}
    for label, key in keys:
        quoted = _quote_key(key)
        for handler in TICKET_HANDLERS:
            body = valid_body.get(handler, b"")
            probes.append(Probe(f"/Ticket/{quoted}/{handler}", body, f"{label}"))
        probes.append(Probe(f"/SeatMap/{quoted}/get", b"", label, tolerated_2xx=True))
    return probes


def _without(data: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != name}


def fuzz_probes(prefix: str, examples: int = FUZZ_EXAMPLES) -> list[Probe]:
    """Hypothesis-generated malformed bodies (derandomized, bounded); [] without hypothesis."""
    try:
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis import strategies as st
    except ImportError:
        return []
    seat = f"{prefix}bad-fuzz"
    ticket_path = f"/Ticket/{_quote_key(seat)}"
    ws = st.text(alphabet=" \t\r\n", min_size=1, max_size=4)
    forbidden = st.sampled_from(["\x00", "\x1f", "\x7f", "\x85", "\x9f", "\ud800", "\udbff"])
    safe_text = st.text(max_size=8).filter(lambda s: s.strip() != "")
    poisoned = st.tuples(st.text(max_size=6), forbidden, st.text(max_size=6)).map("".join)
    too_long = st.integers(201, 4000).map(lambda n: "x" * n)
    scalar = st.one_of(
        st.integers(), st.floats(), st.booleans(), st.just(""), ws, poisoned, too_long
    )
    leaf = st.one_of(st.none(), st.booleans(), st.integers(), safe_text)
    junk_keys = st.sampled_from(["a", "user", "ticket", "id", "x y", "\u00e9", "\U0001f3ab"])
    bad_id = st.one_of(scalar, st.lists(leaf, max_size=3))  # never null, never an object
    junk = st.dictionaries(junk_keys, leaf, max_size=3)

    def encode(value: Any, ascii_only: bool) -> bytes:
        text = json.dumps(value, ensure_ascii=ascii_only)
        return text.encode("utf-8", "surrogatepass")

    @st.composite
    def checkout_body(draw: st.DrawFn) -> bytes:
        body: dict[str, Any] = {**draw(junk), "ticketId": seat, "userId": "fuzzer"}
        name = draw(st.sampled_from(["ticketId", "userId", "paymentMethodId"]))
        how = draw(st.sampled_from(["bad", "null", "missing", "object"]))
        if how == "missing" and name != "paymentMethodId":
            del body[name]
        elif how == "null":
            body[name] = None
        elif how == "object":
            body[name] = draw(junk)
        else:
            body[name] = draw(bad_id)
        return encode(body, draw(st.booleans()))

    @st.composite
    def field_body(draw: st.DrawFn, name: str, may_be_null: bool) -> bytes:
        wrapped = draw(st.booleans())
        value = draw(bad_id if not (wrapped and may_be_null) else st.one_of(bad_id, st.none()))
        doc: Any = {**draw(junk), name: value} if wrapped else value
        return encode(doc, draw(st.booleans()))

    unreadable = st.one_of(
        st.binary(min_size=1, max_size=64).filter(_unreadable),
        st.builds(lambda d, n: encode(d, True)[:n], junk, st.integers(1, 20)).filter(_unreadable),
    )
    strategies = [
        st.tuples(st.just("/Checkout/process"), checkout_body()),
        st.tuples(st.just(f"{ticket_path}/reserve"), field_body("userId", True)),
        st.tuples(st.just(f"{ticket_path}/confirm"), field_body("userId", True)),
        st.tuples(st.just(f"{ticket_path}/release"), field_body("userId", True)),
        st.tuples(st.just(f"{ticket_path}/cleanup"), field_body("holdId", False)),
        st.tuples(st.sampled_from([f"{ticket_path}/get", f"{ticket_path}/reserve"]), unreadable),
        st.tuples(st.just(f"/SeatMap/{_quote_key(prefix.rstrip(':'))}/get"), unreadable),
    ]
    found: dict[tuple[str, bytes], Probe] = {}

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(strategies))
    def gather(case: tuple[str, bytes]) -> None:
        path, body = case
        found.setdefault((path, body), Probe(path, body, "generated"))

    gather()
    return list(found.values())


def _unreadable(body: bytes) -> bool:
    """Not JSON that Python can decode to a value (and not blank)."""
    if not body.strip():
        return False
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return True
    return False


def describe(probe: Probe) -> str:
    """The exact input, shortened for a report line."""
    body = probe.body
    shown = repr(body[:80]) + (f"... ({len(body)} bytes)" if len(body) > 80 else "")
    path = probe.path if len(probe.path) < 90 else probe.path[:60] + f"...({len(probe.path)})"
    return f"POST {path} [{probe.label}] {shown}"


def bad_input(cx: ChaosContext) -> str:
    """Malformed requests to every public handler: a fast 4xx each, nothing changes."""
    probes = bad_input_probes(cx.prefix)
    generated = fuzz_probes(cx.prefix)
    probes += generated
    slowest = 0.0
    failures: list[str] = []
    tolerated = hung = 0
    statuses: dict[int, int] = {}
    started = time.monotonic()
    client = cx.client(timeout=BAD_INPUT_TIMEOUT_S)
    keys: list[str] = []
    try:
        for n, probe in enumerate(probes):
            key = f"chaos-{cx.run_id}-bad-{n}."
            keys.append(key)
            a = send(
                client,
                probe.path,
                probe.body,
                headers={"Idempotency-Key": key},
                content_type=probe.content_type,
                timeout=BAD_INPUT_TIMEOUT_S,
            )
            slowest = max(slowest, a.seconds)
            if a.status is not None:
                statuses[a.status] = statuses.get(a.status, 0) + 1
            if a.status is None:
                failures.append(f"no answer within {BAD_INPUT_TIMEOUT_S:g}s: {describe(probe)}")
                # Restate retries it; on a Ticket it would hold the seat's queue: stop it.
                hung += _kill_unfinished(cx, key)
            elif a.status >= 500:
                failures.append(f"{a.status}: {describe(probe)}: {a.text[:120]}")
            elif a.status < 400 and not probe.tolerated_2xx:
                failures.append(f"accepted ({a.status}): {describe(probe)}: {a.text[:80]}")
            elif a.status < 400:
                tolerated += 1
            elif a.seconds > BAD_INPUT_BUDGET_S:
                failures.append(f"answered after {a.seconds:.2f}s: {describe(probe)}")
        took = time.monotonic() - started
        killed = hung + _kill_unfinished(cx, f"chaos-{cx.run_id}-bad-")
        admin = cx.admin()
        try:
            written = read_tickets(admin, f"{cx.prefix}bad")
        finally:
            admin.close()
        for seat in (f"{cx.prefix}bad-seat", f"{cx.prefix}bad-fuzz"):
            state = ticket_state(client, seat)
            expect(state["status"] == "AVAILABLE", f"{seat} became {state['status']}")
    finally:
        client.close()
    expect(not written, f"malformed input wrote state for {sorted(written)[:3]}")
    if killed and not failures:
        failures.append(f"{killed} invocations were still retrying after the run (killed)")
    codes = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
    cx.details = failures
    if failures:
        killed_note = f" (killed {killed} invocations Restate kept retrying)" if killed else ""
        raise CheckFailed(
            f"{len(failures)}/{len(probes)} malformed requests misbehaved{killed_note}; first: "
            + " | ".join(failures[:3])
        )
    extra = f", {tolerated} SeatMap reads of malformed keys answered 200 []" if tolerated else ""
    fuzz = f"{len(generated)} generated" if generated else "hypothesis not installed"
    return (
        f"{len(probes)} malformed requests ({fuzz}) in {took:.1f}s: {codes}{extra};"
        f" slowest {slowest * 1000:.0f} ms; no state written"
    )


def _kill_unfinished(cx: ChaosContext, key_prefix: str) -> int:
    """Kill invocations of these requests that Restate is still retrying."""
    rows = [r for r in _invocations(cx, key_prefix) if r["status"] != "completed"]
    if rows:
        admin = cx.admin()
        try:
            for row in rows:
                admin.request("PATCH", f"/invocations/{row['id']}/kill")
        finally:
            admin.close()
    return len(rows)


# --- 7. unsigned -------------------------------------------------------------------------


def unsigned(cx: ChaosContext) -> str:
    """With request signing on, the service refuses calls that did not come via Restate."""
    if not cx.env.get("service", "signing"):
        raise Skip("request signing is off in this environment")
    if cx.env.service_mode == "connect":
        raise Skip("the service has no URL of its own in connect mode")
    svc = cx.env.service.url
    headers = {"content-type": "application/vnd.restate.invocation.v1"}
    manifest = {"accept": "application/vnd.restate.endpointmanifest.v1+json"}
    forged = {**headers, "x-restate-signature-scheme": "v1", "x-restate-jwt-v1": "forged"}
    refused: list[int] = []
    with httpx.Client(timeout=10.0) as http:
        for method, path, hdrs in [
            ("POST", "/invoke/Ticket/get", headers),
            ("POST", "/invoke/Checkout/process", headers),
            ("POST", "/invoke/Ticket/reserve", forged),
            ("GET", "/discover", manifest),
        ]:
            code = http.request(method, f"{svc}{path}", headers=hdrs).status_code
            expect(code == 401, f"unsigned {method} {svc}{path} answered {code}")
            refused.append(code)
    client = cx.client()
    try:
        t = cx.seat("signed")
        via = client.call("Ticket", "get", key=t, timeout=30)
        expect(via.status_code == 200, f"Ticket/get through the ingress answered {via.status_code}")
    finally:
        client.close()
    return f"{len(refused)} unsigned or forged calls to {svc} refused with 401; ingress 200"


# --- 8. restart-idempotence ----------------------------------------------------------------


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


# --- 9. node-loss: lose a cluster node under load --------------------------------------


@dataclass
class Booking:
    """One checkout of the node-loss load, followed to a definitive answer."""

    seat: str
    user: str
    key: str
    status: int = 0
    latency_ms: float = 0.0
    errors: int = 0
    started: float = 0.0


def node_loss(
    env: Environment, *, duration: float = 24.0, workers: int = 8, victim: int = 2
) -> str:
    """SIGKILL one node under load, restart it, let it rejoin; prove nothing was lost.

    Every request carries an Idempotency-Key; one that hits the dead node (connection
    error or 5xx) is re-sent with the same key to the next node until it answers, so every
    accepted invocation is followed to its end. Returns the scenario's figures."""
    stack = Stack(env)
    runtime = stack.runtime
    if not isinstance(runtime, ClusterRuntime) or len(runtime.nodes) < 3:
        raise NexusError("node-loss needs a cluster environment with at least 3 nodes")
    dead = runtime.nodes[victim - 1]
    if not stack.procs.info(dead.process).alive:
        raise NexusError(f"{dead.name} is not running: deploy the cluster first")
    urls = [n.ingress_url for n in runtime.nodes]
    run = time.strftime("%H%M%S")
    prefix = f"nodeloss-{run}:"
    errors_at: dict[str, int] = {u: 0 for u in urls}
    bookings: list[Booking] = []
    kill_at, restart_at = duration * 0.25, duration * 0.5
    t0 = time.monotonic()
    events: dict[str, float] = {}
    stop_loading = False

    def worker(w: int) -> None:
        client = httpx.Client(timeout=30.0)
        i = 0
        try:
            while not stop_loading and time.monotonic() - t0 < duration:
                b = Booking(f"{prefix}w{w}-{i}", f"user-{w}-{i}", f"nodeloss-{run}-{w}-{i}")
                b.started = time.monotonic()
                node = (w + i) % len(urls)
                deadline = b.started + 90
                while time.monotonic() < deadline:
                    url = urls[node]
                    try:
                        resp = client.post(
                            f"{url}/Checkout/process",
                            json={"ticketId": b.seat, "userId": b.user},
                            headers={"Idempotency-Key": b.key},
                        )
                        if resp.status_code < 500:
                            b.status = resp.status_code
                            break
                    except httpx.HTTPError:
                        pass
                    b.errors += 1
                    errors_at[url] += 1
                    node = (node + 1) % len(urls)
                    time.sleep(0.2)
                b.latency_ms = (time.monotonic() - b.started) * 1000
                bookings.append(b)
                i += 1
        finally:
            client.close()

    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(worker, w) for w in range(workers)]
        time.sleep(kill_at)
        stack.procs.kill(dead.process)
        events["kill"] = time.monotonic() - t0
        time.sleep(max(0.0, restart_at - (time.monotonic() - t0)))
        stack.procs.stop(dead.process)
        stack.procs.start(runtime.spec(dead), wait=True)
        runtime.wait_for_leaders(120.0)
        wait_until(
            http_ready(f"{dead.ingress_url}/restate/health"),
            60.0,
            f"{dead.name}'s ingress did not come back",
        )
        events["rejoined"] = time.monotonic() - t0
        for f in futures:
            f.result(timeout=duration + 120)
    unresolved = [b for b in bookings if b.status == 0]
    confirmed = [b for b in bookings if b.status == 200]
    lost: list[str] = []
    checker = httpx.Client(timeout=30.0)
    try:
        for b in confirmed:
            state = checker.post(f"{urls[0]}/Ticket/{b.seat}/get").json()
            if state.get("status") != "SOLD" or state.get("reservedBy") != b.user:
                lost.append(f"{b.seat}: confirmed to {b.user} but {state}")
    finally:
        checker.close()
    report = audit(env, prefix=prefix)
    window = [b for b in bookings if events["kill"] <= b.started - t0 <= events["rejoined"]]
    calm = [b for b in bookings if b.started - t0 < events["kill"]]
    figures = (
        f"{len(bookings)} bookings, {len(confirmed)} confirmed, {len(unresolved)} unresolved,"
        f" {len(lost)} lost; p99 {p99(calm):.0f} ms before the kill, {p99(window):.0f} ms"
        f" while {dead.name} was down; errors at {dead.name}'s ingress:"
        f" {errors_at[dead.ingress_url]}, elsewhere: "
        f"{sum(v for u, v in errors_at.items() if u != dead.ingress_url)};"
        f" {dead.name} rejoined {events['rejoined'] - events['kill']:.1f}s after the kill"
        f" ({events['rejoined'] - restart_at:.1f}s after its restart); {report.lines()[0]}"
    )
    problems = [*lost, *(f"{b.seat}: no definitive answer" for b in unresolved), *report.violations]
    if any(b.status not in (200,) for b in bookings if b.status):
        odd = sorted({b.status for b in bookings if b.status not in (0, 200)})
        problems.append(f"answers other than 200 on fresh seats: {odd}")
    if problems:
        raise NodeLossFailed(figures + "\n" + "\n".join(problems[:20]))
    return figures


class NodeLossFailed(NexusError):
    """node-loss found a lost or unresolved booking."""


def p99(bookings: list[Booking]) -> float:
    values = sorted(b.latency_ms for b in bookings)
    return values[min(len(values) - 1, int(len(values) * 0.99))] if values else 0.0


# --- the run -------------------------------------------------------------------------------

Scenario = Callable[[ChaosContext], str]


def node_loss_scenario(cx: ChaosContext) -> str:
    """node-loss: SIGKILL a cluster node under load, restart it; no booking lost."""
    if cx.env.runtime != "cluster":
        raise Skip(f"needs runtime = cluster, a node to lose (here: {cx.env.runtime})")
    return node_loss(cx.env)


SCENARIOS: dict[str, Scenario] = {
    "service-crash": service_crash,
    "gateway-outage": gateway_outage,
    "server-crash": server_crash,
    "hot-seat": hot_seat,
    "hold-expiry": hold_expiry,
    "bad-input": bad_input,
    "unsigned": unsigned,
    "restart-idempotence": restart_idempotence,
    "node-loss": node_loss_scenario,
}


def select(scenario: str | None) -> list[str]:
    """Scenario names to run: all, one, or a comma-separated list."""
    if not scenario:
        return list(SCENARIOS)
    names = [n.strip() for n in scenario.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise NexusError(
            f"unknown chaos scenario {', '.join(unknown) or scenario!r}"
            f" (known: {', '.join(SCENARIOS)})"
        )
    return names


def _guarded(fn: Scenario, cx: ChaosContext) -> Callable[[], str]:
    """Report any unexpected exception of a scenario as its failure, not a crash."""

    def run() -> str:
        try:
            return fn(cx)
        except (Skip, CheckFailed, NexusError, httpx.HTTPError):
            raise
        except Exception as exc:
            raise CheckFailed(f"{type(exc).__name__}: {exc}") from exc

    return run


def run_chaos(
    env: Environment, scenario: str | None = None, out: TextIO | None = None
) -> list[Outcome]:
    """Run one scenario (or all), a line each, then `N passed, N failed`."""
    names = select(scenario)
    stream = out or sys.stdout
    cx = ChaosContext(env, stream)
    print(
        f"chaos {env.name}: ingress {env.ingress.url}, run {cx.run_id}, seats {cx.prefix}*",
        file=stream,
        flush=True,
    )
    return run_checks([(n, _guarded(SCENARIOS[n], cx)) for n in names], out=stream)
