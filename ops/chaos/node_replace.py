"""Node replacement: under load, snapshot the partitions, SIGKILL a node, delete its data
directory, replace it under a new name (`ops.operations.node_replace`) while booking continues, and
prove that no booking was lost."""

from __future__ import annotations

import io
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ops.base.environments import Environment
from ops.base.errors import ApiError, CheckFailed, NexusError, TokenRejected
from ops.base.ids import new_run_id
from ops.base.processes import ProcessManager
from ops.chaos.base import ChaosContext
from ops.chaos.node_loss import Booking, lost_bookings, p99
from ops.clients.admin import IngressClient
from ops.operations.audit import audit
from ops.operations.node_replace import replace_node
from ops.server.cluster import ClusterRuntime
from ops.server.runtimes import wait_until
from ops.server.snapshots import create_snapshots
from ops.testing.checks import Skip


class NodeReplaceFailed(CheckFailed):
    """node-replace found a lost or unresolved booking, or the replacement failed."""


def node_replace_scenario(cx: ChaosContext) -> str:
    """node-replace: lose a node's disk under load, replace it by a new node; no booking lost."""
    if cx.env.runtime != "cluster":
        raise Skip(f"needs runtime = cluster, a node to replace (here: {cx.env.runtime})")
    if cx.env.settings.snapshots.store == "off":
        raise Skip('needs partition snapshots ([snapshots] store = "off" here)')
    return node_replace(cx.env)


@dataclass
class Load:
    """Checkouts on fresh seats from several workers, each followed to a definitive
    answer: a request that hits a dead or loading node is re-sent with the same
    Idempotency-Key to the next node."""

    env: Environment
    urls: list[str]
    prefix: str
    bookings: list[Booking] = field(default_factory=list)
    answers: list[tuple[float, str]] = field(default_factory=list)  # (when, node's ingress)
    errors_at: dict[str, int] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def worker(self, w: int) -> None:
        clients = [IngressClient(url, self.env.token, timeout=30.0) for url in self.urls]
        i = 0
        try:
            while not self.stop.is_set():
                key = f"{self.prefix}w{w}-{i}"
                b = Booking(key, f"user-{w}-{i}", key.replace(":", "-"))
                b.started = time.monotonic()
                node = (w + i) % len(self.urls)
                while time.monotonic() < b.started + 90:
                    url = self.urls[node]
                    try:
                        resp = clients[node].checkout(b.seat, b.user, idempotency_key=b.key)
                        if resp.status_code < 500 and resp.status_code != 404:
                            b.status = resp.status_code
                            with self.lock:
                                self.answers.append((time.monotonic(), url))
                            break
                    except TokenRejected:
                        raise
                    except ApiError:  # the node is down: no answer
                        pass
                    b.errors += 1
                    with self.lock:
                        self.errors_at[url] = self.errors_at.get(url, 0) + 1
                    node = (node + 1) % len(self.urls)
                    time.sleep(0.2)
                b.latency_ms = (time.monotonic() - b.started) * 1000
                with self.lock:
                    self.bookings.append(b)
                i += 1
        finally:
            for client in clients:
                client.close()


def node_replace(
    env: Environment,
    *,
    workers: int = 6,
    calm: float = 4.0,
    after: float = 5.0,
    victim: int = 2,
) -> str:
    """Book for `calm` seconds, snapshot, kill node `victim` and delete its data, replace
    it while booking goes on, book `after` more seconds through the new node; then check
    every confirmed seat and audit. Returns the scenario's figures."""
    procs = ProcessManager(env.state_dir)
    runtime = ClusterRuntime(env, procs)
    if len(runtime.nodes) < 3:
        raise NexusError("node-replace needs a cluster environment with at least 3 nodes")
    old = runtime.nodes[victim - 1]
    if not procs.info(old.process).alive:
        raise NexusError(f"{old.name} is not running: deploy the cluster first")
    urls = [n.ingress_url for n in runtime.nodes]
    load = Load(env, urls, f"nodereplace-{new_run_id()}:")
    t0 = time.monotonic()
    events: dict[str, float] = {}
    replay = io.StringIO()
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(load.worker, w) for w in range(workers)]
        try:
            time.sleep(calm)
            started = time.monotonic()
            snapshots = create_snapshots(runtime)
            events["snapshot"] = time.monotonic() - started
            procs.kill(old.process)
            wait_until(
                lambda: not procs.info(old.process).alive, 10.0, f"{old.name} outlived SIGKILL"
            )
            events["kill"] = time.monotonic() - t0
            data = env.state_dir / "data" / old.name
            shutil.rmtree(data)
            play = replace_node(env, str(victim), out=replay)
            events["replaced"] = time.monotonic() - t0
            if play.failed:
                raise NodeReplaceFailed(f"replace-node failed:\n{replay.getvalue()}")
            time.sleep(after)
        finally:
            load.stop.set()
            for f in futures:
                f.result(timeout=120)
    new = ClusterRuntime(env, procs).nodes[victim - 1]
    unresolved = [b for b in load.bookings if b.status == 0]
    confirmed = [b for b in load.bookings if b.status == 200]
    lost = lost_bookings(env, new.ingress_url, confirmed)
    report = audit(env, prefix=load.prefix)
    window = [b for b in load.bookings if events["kill"] <= b.started - t0 <= events["replaced"]]
    through_new = sum(
        1 for at, url in load.answers if url == new.ingress_url and at - t0 > events["replaced"]
    )
    after_replacement = [b for b in load.bookings if b.started - t0 > events["replaced"]]
    figures = (
        f"{len(load.bookings)} bookings, {len(confirmed)} confirmed, {len(unresolved)} unresolved,"
        f" {len(lost)} lost; snapshot of {len(snapshots)} partitions in"
        f" {events['snapshot']:.2f}s; {old.name} → {new.name} (N{new.id}) in"
        f" {events['replaced'] - events['kill']:.1f}s, {len(window)} bookings started"
        f" meanwhile (p99 {p99(window):.0f} ms, {p99(load.bookings):.0f} ms overall);"
        f" {len(after_replacement)} bookings after it, {through_new} answered by {new.name};"
        f" errors seen: {sum(load.errors_at.values())};"
        f" {report.lines()[0]}"
    )
    problems = [*lost, *(f"{b.seat}: no definitive answer" for b in unresolved), *report.violations]
    odd = sorted({b.status for b in load.bookings if b.status not in (0, 200)})
    if odd:
        problems.append(f"answers other than 200 on fresh seats: {odd}")
    if not after_replacement:
        problems.append("no booking started after the replacement")
    if through_new == 0:
        problems.append(f"the new node {new.name} answered no booking")
    if problems:
        raise NodeReplaceFailed(figures + "\n" + "\n".join(problems[:20]))
    return figures
