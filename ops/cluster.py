"""`runtime = "cluster"`: several restate-server nodes on this machine forming one
Restate cluster (replicated metadata and log), the way a production cluster or Restate
Cloud runs, scaled down to loopback."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from ops.audit import audit
from ops.environments import Environment
from ops.errors import NexusError, ProcessError, RuntimeUnavailable
from ops.processes import ProcessManager, ProcessSpec, http_ready
from ops.runtimes import BinaryRuntime, npm_install, stop_step, unified, wait_until
from ops.stack import Stack
from ops.steps import Context, Result, StepFn

RESTATECTL = "@restatedev/restatectl"


@dataclass(frozen=True)
class Node:
    """One cluster member's identity and addresses."""

    index: int  # 1-based, also its forced node id
    host: str
    ingress_port: int
    admin_port: int
    node_port: int

    @property
    def name(self) -> str:
        return f"n{self.index}"

    @property
    def process(self) -> str:
        return f"restate-{self.name}"

    @property
    def ingress_url(self) -> str:
        return f"http://{self.host}:{self.ingress_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.host}:{self.admin_port}"

    @property
    def address(self) -> str:
        return f"http://{self.host}:{self.node_port}/"


def nodes(env: Environment) -> list[Node]:
    """The environment's nodes, from `[cluster]` ports (or the defaults)."""
    host = env.ingress.host
    ports = zip(
        env.cluster_ports("ingress"),
        env.cluster_ports("admin"),
        env.cluster_ports("node"),
        strict=True,
    )
    return [Node(i, host, ing, adm, nod) for i, (ing, adm, nod) in enumerate(ports, start=1)]


def node_config(env: Environment, node: Node, members: list[Node]) -> str:
    """restate-server's config for one node: the first provisions the cluster."""
    addresses = ", ".join(f'"{m.address}"' for m in members)
    lines = [
        f"# Written by the Nexus toolkit from {env.file} (cluster node {node.index})",
        f'node-name = "{node.name}"',
        f'cluster-name = "nexus-{env.name}"',
        f"force-node-id = {node.index}",
        f"auto-provision = {'true' if node.index == 1 else 'false'}",
        f"default-replication = {env.get('cluster', 'replication')}",
        f"default-num-partitions = {env.get('restate', 'partitions')}",
        f'base-dir = "{env.state_dir / "data" / node.name}"',
        f'bind-address = "{node.host}:{node.node_port}"',
        f'advertised-address = "{node.address}"',
        'listen-mode = "tcp"',
        "disable-telemetry = true",
        'log-format = "compact"',
        "log-disable-ansi-codes = true",
        "",
        "[metadata-client]",
        f"addresses = [{addresses}]",
        "",
        "[bifrost]",
        'default-provider = "replicated"',
        "",
        "[ingress]",
        f'bind-address = "{node.host}:{node.ingress_port}"',
        "",
        "[admin]",
        f'bind-address = "{node.host}:{node.admin_port}"',
    ]
    if env.get("service", "signing"):
        key = env.state_dir / "signing" / "private.pem"
        lines += ["", "[worker.invoker]", f'request-identity-private-key-pem-file = "{key}"']
    return "\n".join(lines) + "\n"


class ClusterRuntime:
    """N managed restate-server processes and the pinned restatectl to inspect them."""

    def __init__(self, env: Environment, procs: ProcessManager) -> None:
        self.env = env
        self.procs = procs
        self.single = BinaryRuntime(env, procs)
        self.nodes = nodes(env)

    @property
    def restatectl(self) -> Path:
        arch = self.single.binary.parent.parent.name.rsplit("-", 1)[-1]
        pkg = f"restatectl-linux-{arch}"
        return self.env.npm_dir / "node_modules" / "@restatedev" / pkg / "bin" / "restatectl"

    def processes(self) -> list[str]:
        return [n.process for n in self.nodes]

    def deploy_steps(self) -> list[tuple[str, StepFn]]:
        return [("install", self.install), ("cluster", self.cluster)]

    def down_steps(self, purge: bool) -> list[tuple[str, StepFn]]:
        return [(n.name, stop_step(self.procs, n.process)) for n in reversed(self.nodes)]

    def install(self, ctx: Context) -> Result:
        """restate-server and restatectl, both at the pinned version."""
        result = self.single.install(ctx)
        if self.restatectl.is_file():
            return result
        version = str(self.env.get("restate", "version"))
        if ctx.check:
            return Result.changed(f"would install {RESTATECTL}@{version} with npm")
        npm_install(self.env.npm_dir, f"{RESTATECTL}@{version}", self.restatectl)
        return Result.changed(f"installed restate-server and {RESTATECTL} {version}")

    def config_file(self, node: Node) -> Path:
        return self.env.state_dir / f"restate-{node.name}.toml"

    def spec(self, node: Node) -> ProcessSpec:
        config = node_config(self.env, node, self.nodes)
        return ProcessSpec(
            name=node.process,
            argv=[
                str(self.single.binary),
                "--config-file",
                str(self.config_file(node)),
                "--no-logo",
            ],
            cwd=self.env.state_dir,
            ports=[
                (node.host, node.ingress_port),
                (node.host, node.admin_port),
                (node.host, node.node_port),
            ],
            ready=http_ready(f"{node.admin_url}/health"),
            inputs=config,
            ready_timeout=90.0,
        )

    def cluster(self, ctx: Context) -> Result:
        """Every node running with its config; every partition led; every ingress up."""
        started: list[str] = []
        diff: list[str] = []
        pending: list[tuple[Node, ProcessSpec]] = []
        for node in self.nodes:
            spec = self.spec(node)
            wanted = node_config(self.env, node, self.nodes)
            path = self.config_file(node)
            current = path.read_text() if path.is_file() else ""
            info = self.procs.info(node.process)
            if info.alive and info.fingerprint == spec.fingerprint():
                continue
            diff += unified(current, wanted, str(path)) if current != wanted else []
            diff.append(f"{node.process}: {'restart' if info.alive else 'stopped → running'}")
            pending.append((node, spec))
        if ctx.check:
            if pending:
                names = ", ".join(n.name for n, _ in pending)
                return Result.changed(f"would start or restart nodes {names}", diff)
            return Result.ok(f"{len(self.nodes)} nodes running")
        # Start every pending node before waiting on any: a node is healthy only once it
        # can reach the metadata quorum, which needs the others.
        for node, spec in pending:
            self.procs.stop(node.process)
            path = self.config_file(node)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(node_config(self.env, node, self.nodes))
            (self.env.state_dir / "data" / node.name).mkdir(parents=True, exist_ok=True)
            self.procs.start(spec, wait=False)
            started.append(node.name)
        for node, spec in pending:
            info = self.procs.info(node.process)
            assert info.pid is not None
            self.procs.wait_ready(spec, info.pid)
        leaders = self.wait_for_leaders(120.0)
        for node in self.nodes:
            wait_until(
                self.while_alive(http_ready(f"{node.ingress_url}/restate/health")),
                60.0,
                f"{node.name}'s ingress did not become ready within 60s",
            )
        message = f"{len(self.nodes)} nodes, {leaders} partitions led"
        if started:
            return Result.changed(f"started {', '.join(started)}: {message}", diff)
        return Result.ok(message)

    def partition_leaders(self) -> dict[int, str]:
        """Partition id → leader node, from restatectl's cluster tables."""
        sql = (
            "SELECT partition_id, plain_node_id FROM partition_state"
            " WHERE effective_mode = 'Leader' ORDER BY partition_id"
        )
        addresses = [arg for n in self.nodes for arg in ("-s", n.address)]
        try:
            proc = subprocess.run(
                [str(self.restatectl), *addresses, "sql", "--json", sql],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RuntimeUnavailable(f"restatectl did not answer: {exc}") from None
        if proc.returncode != 0:
            return {}
        try:
            rows = json.loads(proc.stdout or "[]")
        except ValueError:
            return {}
        return {int(r["partition_id"]): str(r["plain_node_id"]) for r in rows}

    def check_alive(self) -> None:
        """Fail at once, naming the node and its log, when a node's process has died:
        a wait for leaders or readiness would otherwise sit out its whole timeout."""
        for node in self.nodes:
            if not self.procs.info(node.process).alive:
                tail = self.procs.tail(node.process)
                raise ProcessError(
                    f"{node.name} ({node.process}) is not running:\n{tail}",
                    log=self.procs.log_file(node.process),
                )

    def while_alive(self, probe: Callable[[], bool]) -> Callable[[], bool]:
        """`probe`, failing at once (`check_alive`) when a node has died."""

        def checked() -> bool:
            self.check_alive()
            return probe()

        return checked

    def wait_for_leaders(self, timeout: float) -> int:
        want = int(self.env.get("restate", "partitions"))
        deadline = time.monotonic() + timeout
        leaders: dict[int, str] = {}
        while time.monotonic() < deadline:
            self.check_alive()
            leaders = self.partition_leaders()
            if len(leaders) >= want:
                return len(leaders)
            time.sleep(0.5)
        raise NexusError(
            f"only {len(leaders)} of {want} partitions have a leader after {timeout:g}s"
        )

    def status_lines(self) -> list[str]:
        """Nodes with health and PIDs, and who leads each partition."""
        lines = ["cluster nodes"]
        for node in self.nodes:
            info = self.procs.info(node.process)
            healthy = http_ready(f"{node.admin_url}/health")() if info.alive else False
            state = "healthy" if healthy else ("running" if info.alive else "stopped")
            lines.append(
                f"  {node.name}  {state:<8} pid {info.pid}  ingress {node.ingress_url}"
                f"  admin {node.admin_url}  node {node.address}"
            )
        leaders = self.partition_leaders() if self.restatectl.is_file() else {}
        led = ", ".join(f"p{p}→{n}" for p, n in sorted(leaders.items())) or "unknown"
        lines.append(f"  partition leaders: {led}")
        return lines


# --- fault injection: lose a node under load ---------------------------------------------


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
