"""Node loss: SIGKILL one node of a local cluster under load, restart it, and prove that
no booking was lost."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ops.base.environments import Environment
from ops.base.errors import ApiError, NexusError, NodeLossFailed, TokenRejected
from ops.base.ids import new_run_id
from ops.base.processes import http_ready
from ops.chaos.base import (
    ChaosContext,
)
from ops.clients.admin import IngressClient
from ops.operations.audit import audit
from ops.release.stack import Stack
from ops.server.cluster import ClusterRuntime
from ops.server.runtimes import wait_until
from ops.testing.checks import Skip


def node_loss_scenario(cx: ChaosContext) -> str:
    """node-loss: SIGKILL a cluster node under load, restart it; no booking lost."""
    if cx.env.runtime != "cluster":
        raise Skip(f"needs runtime = cluster, a node to lose (here: {cx.env.runtime})")
    return node_loss(cx.env)


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
    error, 5xx, or the 404 of a node still loading the registered services) is re-sent
    with the same key to the next node until it answers, so every accepted invocation is
    followed to its end. Returns the scenario's figures."""
    stack = Stack(env)
    runtime = stack.runtime
    if not isinstance(runtime, ClusterRuntime) or len(runtime.nodes) < 3:
        raise NexusError("node-loss needs a cluster environment with at least 3 nodes")
    dead = runtime.nodes[victim - 1]
    if not stack.procs.info(dead.process).alive:
        raise NexusError(f"{dead.name} is not running: deploy the cluster first")
    urls = [n.ingress_url for n in runtime.nodes]
    run = new_run_id()
    prefix = f"nodeloss-{run}:"
    errors_at: dict[str, int] = {u: 0 for u in urls}
    bookings: list[Booking] = []
    kill_at, restart_at = duration * 0.25, duration * 0.5
    t0 = time.monotonic()
    events: dict[str, float] = {}
    stop_loading = False

    def worker(w: int) -> None:
        clients = [IngressClient(url, env.token, timeout=30.0) for url in urls]
        i = 0
        try:
            while not stop_loading and time.monotonic() - t0 < duration:
                b = Booking(f"{prefix}w{w}-{i}", f"user-{w}-{i}", f"nodeloss-{run}-{w}-{i}")
                b.started = time.monotonic()
                node = (w + i) % len(urls)
                deadline = b.started + 90
                while time.monotonic() < deadline:
                    try:
                        resp = clients[node].checkout(b.seat, b.user, idempotency_key=b.key)
                        # A node that has just restarted can answer before it has loaded
                        # the registered services: 404, try the next node as for a 5xx.
                        if resp.status_code < 500 and resp.status_code != 404:
                            b.status = resp.status_code
                            break
                    except TokenRejected:
                        raise
                    except ApiError:  # the node is down: no answer
                        pass
                    b.errors += 1
                    errors_at[urls[node]] += 1
                    node = (node + 1) % len(urls)
                    time.sleep(0.2)
                b.latency_ms = (time.monotonic() - b.started) * 1000
                bookings.append(b)
                i += 1
        finally:
            for client in clients:
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
    lost = lost_bookings(env, urls[0], confirmed)
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
