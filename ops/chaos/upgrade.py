"""Chaos scenario `server-upgrade`: restate-server upgraded under load, nothing lost.

The scenario builds a throwaway single-node binary stack of its own (free loopback
ports, state under the environment's state directory, `chaos/server-upgrade-<run>/`) on
restate-server `FROM_VERSION`, with the mock gateway slowed so that checkouts are
mid-saga when the server restarts. Buyers keep booking while the toolkit's own deploy
(`ops.release.stack.deploy`) moves the same environment to `TO_VERSION`; a prober times
the ingress's outage. Then every checkout must have ended (confirmed, declined or
refused), no invocation may be left open or have hit a journal mismatch, the audit must
be clean, the data marker must name the new version and the registered deployments must
be the ones from before. The stack is stopped and deleted at the end (kept, stopped, when
a check failed, for a look at its logs)."""

from __future__ import annotations

import io
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from ops.base import environments
from ops.base.environments import Environment
from ops.base.errors import ApiError, CheckFailed, NexusError
from ops.base.processes import ProcessManager, free_port, poll_until
from ops.base.steps import StepContext
from ops.chaos.base import ChaosContext
from ops.clients.admin import AdminClient, GatewayClient
from ops.clients.invocations import by_idempotency_key, open_invocations
from ops.operations.audit import audit
from ops.release.stack import deploy, down
from ops.server.runtimes import SERVER, BinaryRuntime
from ops.server.server_upgrade import markers
from ops.testing.checks import Skip

FROM_VERSION = "1.6.2"
TO_VERSION = "1.7.12"
BUYERS = 4  # threads, each one buyer after another on fresh seats
LATENCY_MS = 400  # the mock gateway's delay per charge: checkouts are mid-saga at the restart
CALM_S = 4.0  # booking on FROM_VERSION before the deploy starts
AFTER_S = 4.0  # booking on TO_VERSION after the deploy ended
MAX_LOAD_S = 150.0  # hard bound of the buyers and the prober, whatever happens
MAX_PER_BUYER = 400
ATTEMPT_TIMEOUT_S = 20.0  # one HTTP attempt of a checkout
BOOKING_DEADLINE_S = 90.0  # a checkout re-sent with its Idempotency-Key until then
RETRY_PAUSE_S = 0.2
PROBE_EVERY_S = 0.05
PROBE_TIMEOUT_S = 1.0
SETTLE_S = 60.0  # for every invocation of the run to complete after the load
DECLINE_EVERY = 5  # every 5th checkout pays with a card the gateway declines
REFUSE_EVERY = 3  # every 3rd confirmed seat is asked for again by another buyer


# --- the throwaway stack -------------------------------------------------------------


def stack_toml(base: Environment, state_dir: Path, version: str, ports: dict[str, int]) -> str:
    """The scenario's environment file: binary runtime, process service, mock gateway, all
    on loopback, at `version`."""
    restate, service = base.settings.restate, base.settings.service
    return f"""# Written by the server-upgrade chaos scenario; deleted with its stack.
[restate]
runtime = "binary"
version = "{version}"
ingress_url = "http://127.0.0.1:{ports["ingress"]}"
admin_url = "http://127.0.0.1:{ports["admin"]}"
node_port = {ports["node"]}
partitions = {restate.partitions}

[service]
mode = "process"
url = "http://127.0.0.1:{ports["service"]}"
port_range = [{ports["service"]}, {ports["service"]}]
hold_seconds = {service.hold_seconds:g}

[gateway]
mode = "mock"
url = "http://127.0.0.1:{ports["gateway"]}"
latency_ms = {LATENCY_MS}

[state]
dir = "{state_dir}"
"""


def throwaway_envs(base: Environment, work: Path, name: str) -> tuple[Environment, Environment]:
    """One environment (same name, ports and state) at FROM_VERSION and at TO_VERSION: the
    upgrade is the second file's deploy."""
    ports = {k: free_port() for k in ("ingress", "admin", "node", "service", "gateway")}
    found: list[Environment] = []
    for version in (FROM_VERSION, TO_VERSION):
        file = work / version / f"{name}.toml"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(stack_toml(base, work / "state", version, ports))
        found.append(environments.load(str(file), root=base.root))
    return found[0], found[1]


# --- buyers and the prober -----------------------------------------------------------


@dataclass
class Booking:
    """One checkout, re-sent with its Idempotency-Key until it is answered for good."""

    seat: str
    user: str
    key: str
    method: str
    expected: int  # 200 confirmed, 402 declined, 409 refused (the seat was sold)
    started: float
    ended: float = 0.0
    status: int = 0  # 0: never answered for good
    text: str = ""
    errors: list[tuple[float, str]] = field(default_factory=list)  # (when, kind)


def attempt(http: httpx.Client, b: Booking) -> tuple[str | None, httpx.Response | None]:
    """One POST of a checkout: (None, answer) for a definitive answer, else (kind, None)."""
    body = {"ticketId": b.seat, "userId": b.user, "paymentMethodId": b.method}
    try:
        resp = http.post(
            "/Checkout/process",
            json=body,
            headers={"Idempotency-Key": b.key},
            timeout=ATTEMPT_TIMEOUT_S,
        )
    except httpx.ConnectError:
        return "connection refused", None
    except httpx.TimeoutException:
        return "timeout", None
    except httpx.TransportError:
        return "connection dropped", None
    if resp.status_code >= 500 and "Payment failed" not in resp.text:
        return "5xx", None  # the service's own 502 "Payment failed" is an answer
    if resp.status_code == 404:
        return "404", None  # a server that has not loaded its registered services yet
    return None, resp


class Load:
    """Buyers on fresh seats and a prober of the ingress, bounded in time and count."""

    def __init__(self, env: Environment, run_id: str) -> None:
        self.env = env
        self.seat_prefix = f"upgrade-{run_id}:"
        self.key_prefix = f"upgrade-{run_id}-"
        self.bookings: list[Booking] = []
        self.probes: list[tuple[float, str | None]] = []  # (when answered, failure kind)
        self.mismatches: dict[str, str] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.deadline = time.monotonic() + MAX_LOAD_S
        workers = [self._buyer] * BUYERS + [self._probe, self._watch]
        self.threads = [
            threading.Thread(target=fn, args=(i,), daemon=True) for i, fn in enumerate(workers)
        ]

    def start(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=BOOKING_DEADLINE_S + ATTEMPT_TIMEOUT_S)

    def running(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def _http(self, timeout: float) -> httpx.Client:
        token = self.env.token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.env.ingress.url, headers=headers, timeout=timeout)

    def _buyer(self, w: int) -> None:
        with self._http(ATTEMPT_TIMEOUT_S) as http:
            for n in range(MAX_PER_BUYER):
                if not self.running():
                    return
                declined = (w + n) % DECLINE_EVERY == 0
                b = self._follow(
                    http,
                    f"{self.seat_prefix}b{w}-{n}-{uuid.uuid4().hex[:6]}",
                    f"buyer-{w}-{n}",
                    "card_declined" if declined else "card_success",
                    402 if declined else 200,
                )
                if b.status == 200 and n % REFUSE_EVERY == 0 and self.running():
                    self._follow(http, b.seat, f"late-{w}-{n}", "card_success", 409)

    def _follow(
        self, http: httpx.Client, seat: str, user: str, method: str, expected: int
    ) -> Booking:
        b = Booking(seat, user, f"{self.key_prefix}{uuid.uuid4().hex}", method, expected,
                    started=time.monotonic())  # fmt: skip
        while time.monotonic() < b.started + BOOKING_DEADLINE_S:
            kind, resp = attempt(http, b)
            if resp is not None:
                b.status, b.text = resp.status_code, resp.text[:200]
                break
            b.errors.append((time.monotonic(), str(kind)))
            time.sleep(RETRY_PAUSE_S)  # a client backs off, then re-sends with its key
        b.ended = time.monotonic()
        with self.lock:
            self.bookings.append(b)
        return b

    def _probe(self, _: int) -> None:
        """A cheap ingress call (a seat's `get`) every PROBE_EVERY_S: the outage as buyers
        meet it, from the first failed call to the first one answered again."""
        path = f"/Ticket/{quote(self.seat_prefix + 'probe', safe='')}/get"
        with self._http(PROBE_TIMEOUT_S) as http:
            while self.running():
                kind: str | None = None
                try:
                    status = http.post(path).status_code
                    kind = None if status == 200 else f"HTTP {status}"
                except httpx.ConnectError:
                    kind = "connection refused"
                except httpx.TimeoutException:
                    kind = "timeout"
                except httpx.TransportError:
                    kind = "connection dropped"
                with self.lock:
                    self.probes.append((time.monotonic(), kind))
                time.sleep(PROBE_EVERY_S)

    def _watch(self, _: int) -> None:
        """sys_invocation every half second: any open invocation on a journal mismatch (the
        admin API is away while the server restarts: those polls are skipped)."""
        admin = AdminClient(self.env.admin.url, self.env.token, timeout=5.0, retry_budget_s=0)
        try:
            while self.running():
                try:
                    for inv in open_invocations(admin):
                        why = inv.stuck_reason()
                        if why == "journal mismatch":
                            self.mismatches[inv.id] = f"{inv.target}: {inv.last_failure}"[:200]
                except NexusError:
                    pass
                time.sleep(0.5)
        finally:
            admin.close()


# --- what the run shows --------------------------------------------------------------


@dataclass
class Upgrade:
    """What the scenario observed, for `verdict` and `figures`."""

    bookings: list[Booking]
    probes: list[tuple[float, str | None]]
    deploy_started: float
    deploy_ended: float
    deploy_failed: bool
    deploy_lines: list[str]
    marker_versions: list[str]
    server_version: str
    pids: tuple[int | None, int | None]
    deployments: tuple[list[str], list[str]]
    open_invocations: list[str] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    audit_violations: list[str] = field(default_factory=list)
    audit_line: str = ""


def outage(probes: list[tuple[float, str | None]]) -> tuple[float, float, float] | None:
    """(first failed probe, first answered probe after it, seconds between), or None."""
    first = next((t for t, kind in probes if kind is not None), None)
    if first is None:
        return None
    back = next((t for t, kind in probes if t > first and kind is None), None)
    if back is None:
        return first, float("inf"), float("inf")
    return first, back, back - first


def phase(u: Upgrade, b: Booking) -> str:
    if b.started < u.deploy_started:
        return "before"
    return "during" if b.started <= u.deploy_ended else "after"


def in_flight_at_stop(u: Upgrade) -> list[Booking]:
    """Checkouts sent before the server stopped answering and not answered by then."""
    window = outage(u.probes)
    if window is None:
        return []
    down_at = window[0]
    return [b for b in u.bookings if b.started < down_at and (b.ended > down_at or not b.status)]


def verdict(u: Upgrade) -> list[str]:
    """Every way the run lost something or proved nothing; empty when it passed."""
    problems: list[str] = []
    if u.deploy_failed:
        problems.append(
            "the deploy to " + TO_VERSION + " failed: " + " | ".join(u.deploy_lines[-4:])
        )
    undecided = [b for b in u.bookings if b.status == 0]
    if undecided:
        b = undecided[0]
        problems.append(
            f"{len(undecided)} checkouts never answered for good, e.g. {b.seat}"
            f" ({len(b.errors)} errors, last {b.errors[-1][1] if b.errors else '-'})"
        )
    odd = [b for b in u.bookings if b.status and b.status != b.expected]
    if odd:
        problems.append(
            f"{len(odd)} checkouts answered other than expected, e.g. {odd[0].seat}:"
            f" {odd[0].status} {odd[0].text[:120]} (expected {odd[0].expected})"
        )
    problems += u.lost[:5]
    if u.open_invocations:
        problems.append(
            f"{len(u.open_invocations)} invocations still open: {u.open_invocations[:3]}"
        )
    if u.mismatches:
        problems.append(f"journal mismatch: {u.mismatches[:3]}")
    problems += [f"audit: {v}" for v in u.audit_violations[:5]]
    if any(v != TO_VERSION for v in u.marker_versions) or not u.marker_versions:
        problems.append(f"data marker says {u.marker_versions}, not {TO_VERSION}")
    if u.server_version != TO_VERSION:
        problems.append(f"the server reports version {u.server_version}, not {TO_VERSION}")
    if u.pids[0] is None or u.pids[0] == u.pids[1]:
        problems.append(f"restate-server was not restarted (pid {u.pids[0]} → {u.pids[1]})")
    before, after = u.deployments
    if sorted(before) != sorted(after) or not before:
        problems.append(f"registered deployments changed: {before} → {after}")
    if not in_flight_at_stop(u):
        problems.append("no checkout was in flight when the server stopped: nothing was proven")
    if not any(phase(u, b) == "after" and b.status == 200 for b in u.bookings):
        problems.append(f"no checkout confirmed on {TO_VERSION} after the deploy")
    window = outage(u.probes)
    if window is not None and window[2] == float("inf"):
        problems.append("the ingress never answered again after it went down")
    return problems


def figures(u: Upgrade) -> str:
    """The run in numbers: downtime, buyer-visible errors, checkouts per phase."""
    window = outage(u.probes)
    downtime = "no failed probe" if window is None else f"{window[2]:.2f}s"
    errors = Counter(
        kind for b in u.bookings for t, kind in b.errors if u.deploy_started <= t <= u.deploy_ended
    )
    seen = ", ".join(f"{n} x {k}" for k, n in sorted(errors.items())) or "none"
    failed = Counter(kind for _, kind in u.probes if kind is not None)
    probed = ", ".join(f"{n} x {k}" for k, n in sorted(failed.items())) or "none failed"
    by_phase = {
        p: Counter(b.status for b in u.bookings if phase(u, b) == p)
        for p in ("before", "during", "after")
    }
    parts = [
        f"{p} {c[200]} confirmed/{c[402]} declined/{c[409]} refused" for p, c in by_phase.items()
    ]
    flight = in_flight_at_stop(u)
    return (
        f"{FROM_VERSION} → {TO_VERSION} by deploy in {u.deploy_ended - u.deploy_started:.1f}s"
        f" (pid {u.pids[0]} → {u.pids[1]}); ingress down {downtime} (probe every"
        f" {PROBE_EVERY_S * 1000:.0f} ms, {len(u.probes)} probes: {probed}); {len(flight)}"
        f" checkouts in flight at the stop, {sum(b.status != 0 for b in flight)} of them"
        f" answered for good; buyer-visible errors during the"
        f" deploy: {seen}; {len(u.bookings)} checkouts:"
        f" {'; '.join(parts)}; {len(u.open_invocations)} open invocations,"
        f" {len(u.mismatches)} journal mismatches; marker {u.marker_versions},"
        f" deployments {u.deployments[1]} kept; {u.audit_line}"
    )


# --- the scenario --------------------------------------------------------------------


def server_upgrade(cx: ChaosContext) -> str:
    """server-upgrade: restate-server FROM → TO by deploy under load, on a throwaway
    stack of its own; no checkout lost, stuck or charged twice."""
    if cx.env.runtime == "external":
        raise Skip("the server is external: a local throwaway stack proves nothing about it")
    if shutil.which("npm") is None:
        raise Skip(f"needs npm to install restate-server {FROM_VERSION} and {TO_VERSION}")
    name = f"upgrade-{cx.run_id}"
    work = cx.env.state_dir / "chaos" / f"server-upgrade-{cx.run_id}"
    old, new = throwaway_envs(cx.env, work, name)
    print(
        f"      server-upgrade: a throwaway stack {name} in {work} (ingress"
        f" {old.ingress.url}), not {cx.env.name}'s; {FROM_VERSION} → {TO_VERSION};"
        " deleted afterwards",
        file=cx.out,
        flush=True,
    )
    passed = False
    try:
        result = upgrade_under_load(old, new, cx.run_id)
        passed = True
        return f"throwaway stack {name}, deleted: {result}"
    finally:
        gone = io.StringIO()
        try:
            down(new, purge=passed, out=gone)
        finally:
            if passed:
                shutil.rmtree(work, ignore_errors=True)
                if not any(work.parent.iterdir()):
                    work.parent.rmdir()
            else:
                print(f"      server-upgrade: stopped; state kept in {work}", file=cx.out)


def upgrade_under_load(old: Environment, new: Environment, run_id: str) -> str:
    """Deploy `old`, book, deploy `new` while booking, book on; check; the figures."""
    _play(old, f"deploy of the throwaway stack at {FROM_VERSION}")
    BinaryRuntime(new, ProcessManager(new.state_dir)).install(StepContext())  # not timed
    admin = AdminClient(new.admin.url, new.token, timeout=10.0)
    procs = ProcessManager(new.state_dir)
    try:
        before = sorted(str(d["id"]) for d in admin.deployments())
        pid_before = procs.info(SERVER).pid
        gw = GatewayClient(new.gateway.url, timeout=10.0)
        attempts = gw.attempts()
        load = Load(new, run_id).start()
        try:
            time.sleep(CALM_S)
            charging = poll_until(lambda: gw.attempts() > attempts, 10.0, 0.05)
            started = time.monotonic()
            out = io.StringIO()
            play = deploy(new, out=out)
            ended = time.monotonic()
            time.sleep(AFTER_S)
        finally:
            load.finish()
            gw.close()
        if not charging:
            raise CheckFailed("no charge reached the gateway before the deploy")
        u = Upgrade(
            bookings=load.bookings,
            probes=load.probes,
            deploy_started=started,
            deploy_ended=ended,
            deploy_failed=play.failed,
            deploy_lines=out.getvalue().strip().splitlines(),
            marker_versions=[".".join(map(str, m.current)) for m in markers(new.state_dir)],
            server_version=str(admin.version().get("version", "?")),
            pids=(pid_before, procs.info(SERVER).pid),
            deployments=(before, sorted(str(d["id"]) for d in admin.deployments())),
            mismatches=sorted(load.mismatches.values()),
        )
        u.open_invocations = _settle(admin, load.key_prefix)
        u.lost = _lost(new, [b for b in u.bookings if b.status == 200 and b.expected == 200])
        report = audit(new, prefix=load.seat_prefix)
        u.audit_violations, u.audit_line = report.violations, report.lines()[0]
    finally:
        admin.close()
    problems = verdict(u)
    if problems:
        raise CheckFailed(figures(u) + "\n" + "\n".join(problems))
    return figures(u)


def _play(env: Environment, what: str) -> None:
    out = io.StringIO()
    if deploy(env, out=out).failed:
        raise CheckFailed(f"{what} failed:\n{out.getvalue()[-1500:]}")


def _settle(admin: AdminClient, key_prefix: str) -> list[str]:
    """Wait (bounded) for every invocation of the run to complete; those still open."""
    rows: list[dict[str, Any]] = []

    def done() -> bool:
        rows[:] = by_idempotency_key(admin, prefix=key_prefix)
        return all(r["status"] == "completed" for r in rows)

    poll_until(_tolerant(done), SETTLE_S, 0.5)
    left = {str(r["id"]): str(r["status"]) for r in rows if r["status"] != "completed"}
    if not left:
        return []
    why = {i.id: i.stuck_reason() or i.last_failure for i in open_invocations(admin)}
    return [f"{i} {status} ({why.get(i) or 'no failure'})" for i, status in left.items()]


def _tolerant(probe: Callable[[], bool]) -> Callable[[], bool]:
    def run() -> bool:
        try:
            return probe()
        except ApiError:
            return False

    return run


def _lost(env: Environment, confirmed: list[Booking]) -> list[str]:
    """Confirmed checkouts whose seat is not SOLD to their buyer."""
    lost: list[str] = []
    with httpx.Client(base_url=env.ingress.url, timeout=30.0) as http:
        for b in confirmed:
            state = http.post(f"/Ticket/{quote(b.seat, safe='')}/get").json()
            if state.get("status") != "SOLD" or state.get("reservedBy") != b.user:
                lost.append(f"{b.seat}: confirmed to {b.user} but {state}")
    return lost
