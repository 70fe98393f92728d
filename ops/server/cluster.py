"""`runtime = "cluster"`: several restate-server nodes on this machine forming one
Restate cluster (replicated metadata and log), the way a production cluster or Restate
Cloud runs, scaled down to loopback."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ops.base.environments import Environment
from ops.base.errors import NexusError, ProcessError
from ops.base.processes import ProcessManager, ProcessSpec, http_ready
from ops.base.steps import Result, StepContext, StepFn
from ops.clients.admin import AdminClient
from ops.server.cluster_members import Member, load_members
from ops.server.data_archive import backups_dir, stamp, write_archive
from ops.server.object_store import STORE, ObjectStore, snapshot_config
from ops.server.object_store import status_lines as snapshot_status
from ops.server.partition_stalls import find_stalls, pin_leader, read_replicas, unpin_leader
from ops.server.restatectl import RestatectlError, sql_rows
from ops.server.runtimes import (
    BinaryRuntime,
    npm_install,
    npm_platform,
    stop_step,
    unified,
    wait_until,
)
from ops.server.server_config import Membership, ServerNode, restate_config
from ops.server.server_upgrade import Marker, markers, parse_version, show

RESTATECTL = "@restatedev/restatectl"
#: npm serves restatectl from 1.7.10 on (not 1.6.x): older servers get this one.
OLDEST_RESTATECTL = "1.7.10"
#: How often a wait for leaders looks for a leader-to-be that stalled.
STALL_LOOK_S = 5.0


@dataclass(frozen=True)
class Node:
    """One cluster member's identity and addresses."""

    index: int  # 1-based slot: its ports and its process
    host: str
    ingress_port: int
    admin_port: int
    node_port: int
    member: Member | None = None  # who is in the slot; None: its first node

    @property
    def identity(self) -> Member:
        return self.member or Member(self.index)

    @property
    def name(self) -> str:
        return self.identity.name

    @property
    def id(self) -> int:
        """Its forced node id: the slot's number, or a fresh one after a replacement."""
        return self.identity.id

    @property
    def process(self) -> str:
        return f"restate-n{self.index}"

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
    """The environment's nodes, from `[cluster]` ports (or the defaults) and the slots'
    members (`ops.server.cluster_members`)."""
    host = env.ingress.host
    members = load_members(env.state_dir)
    ports = zip(
        env.cluster_ports("ingress"),
        env.cluster_ports("admin"),
        env.cluster_ports("node"),
        strict=True,
    )
    return [
        Node(i, host, ing, adm, nod, members.slots.get(i))
        for i, (ing, adm, nod) in enumerate(ports, start=1)
    ]


def node_config(env: Environment, node: Node, members: list[Node]) -> str:
    """restate-server's config for one node: the first provisions the cluster (never a
    replacement, which joins the cluster that exists)."""
    membership = Membership(
        node_id=node.id,
        provisions=node.index == 1 and node.member is None,
        metadata_addresses=tuple(m.address for m in members),
        snapshots=tuple(snapshot_config(env)),
    )
    server = ServerNode(
        name=node.name,
        data_dir=env.state_dir / "data" / node.name,
        node_bind=f"{node.host}:{node.node_port}",
        ingress_bind=f"{node.host}:{node.ingress_port}",
        admin_bind=f"{node.host}:{node.admin_port}",
        membership=membership,
    )
    return restate_config(env, server)


def restatectl_version(server: str) -> str:
    """The restatectl release that inspects a cluster of restate-server `server`."""
    oldest = OLDEST_RESTATECTL
    return server if parse_version(server) >= parse_version(oldest) else oldest


def on_binary(spec: ProcessSpec, binary: Path, config: str) -> ProcessSpec:
    """A node's spec run by another restate-server binary with another config."""
    return replace(spec, argv=[str(binary), *spec.argv[1:]], inputs=config)


def restatectl_binary(npm_dir: Path) -> Path:
    """Where an npm install of restatectl into `npm_dir` puts the binary."""
    pkg = f"restatectl-{npm_platform()}"
    return npm_dir / "node_modules" / "@restatedev" / pkg / "bin" / "restatectl"


class ClusterRuntime:
    """N managed restate-server processes and the pinned restatectl to inspect them."""

    def __init__(self, env: Environment, procs: ProcessManager) -> None:
        self.env = env
        self.procs = procs
        self.single = BinaryRuntime(env, procs)
        self.nodes = nodes(env)
        self.store = ObjectStore(env, procs)
        self.healed: list[str] = []  # stalled partitions worked around (partition_stalls)

    @property
    def restatectl(self) -> Path:
        return restatectl_binary(self.env.npm_dir)

    def processes(self) -> list[str]:
        return [n.process for n in self.nodes] + [STORE]

    def deploy_steps(self) -> list[tuple[str, StepFn]]:
        return [("install", self.install), ("snapshot-store", self.store.step),
                ("cluster", self.cluster)]  # fmt: skip

    def down_steps(self, purge: bool) -> list[tuple[str, StepFn]]:
        steps = [(n.name, stop_step(self.procs, n.process)) for n in reversed(self.nodes)]
        return [*steps, ("snapshot-store", stop_step(self.procs, STORE))]

    def install(self, ctx: StepContext) -> Result:
        """restate-server at the pinned version and restatectl at it too, or at the oldest
        npm serves when that is newer."""
        result = self.single.install(ctx)
        if self.restatectl.is_file():
            return result
        version = restatectl_version(self.env.settings.restate.version)
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

    def cluster(self, ctx: StepContext) -> Result:
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
        running = [(n, s) for n, s in pending if self.procs.info(n.process).alive]
        if running and len(running) == len(pending):
            return self.roll(running, diff)
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
        message += self._healed_note()
        if started:
            return Result.changed(f"started {', '.join(started)}: {message}", diff)
        return Result.ok(message)

    def roll(self, pending: list[tuple[Node, ProcessSpec]], diff: list[str]) -> Result:
        """Restart running nodes one at a time (a new version or config), so the cluster
        keeps its quorum: before each node, every partition has a leader and every node
        runs (none crash-looping); after it, the node answers on admin and ingress again.
        The message gives each node's time out of service. A node that does not come up
        is started again on the version its data was last written by, with its old config,
        and the roll stops there, saying so."""
        downtimes: list[str] = []
        found = {m.node: m for m in markers(self.env.state_dir)}
        written = {name: show(m.current) for name, m in found.items()}
        archives: list[Path] = []
        archiving_s = 0.0
        for node, spec in pending:
            self.wait_for_leaders(120.0)
            down_at = time.monotonic()
            path = self.config_file(node)
            old_config = path.read_text() if path.is_file() else ""
            self.procs.stop(node.process)
            started_at = time.monotonic()
            archive = self._archive_node(node, found.get(node.name))
            archiving_s += time.monotonic() - started_at
            archives += [archive] if archive else []
            path.write_text(node_config(self.env, node, self.nodes))
            try:
                self._start_node(node, spec)
            except NexusError as exc:
                back = self._go_back(node, spec, written.get(node.name), old_config)
                rolled = ", ".join(d.split()[0] for d in downtimes) or "none"
                kept = f" (its data before the roll: {archive})" if archive else ""
                raise NexusError(
                    f"{node.name} did not come up on restate-server"
                    f" {self.env.settings.restate.version}: {exc}\n{back}{kept}; the nodes"
                    f" rolled before it ({rolled}) stay on the new version"
                ) from None
            downtimes.append(f"{node.name} {time.monotonic() - down_at:.1f}s")
        leaders = self.wait_for_leaders(120.0)
        # The admin API's SQL can name a restarted node's old generation for a moment
        # ("node N3:2 was shut down"); what deploys next reads it.
        wait_until(self.sql_answers, 60.0, "the cluster's SQL did not answer within 60s")
        size_mb = sum(path.stat().st_size for path in archives) / 1e6
        where = (
            f"; each node's data archived first ({size_mb:.1f} MB in {archiving_s:.1f}s in"
            f" all), in {archives[0].parent}"
            if archives
            else ""
        )
        return Result.changed(
            f"rolled {len(pending)} node(s) one at a time, every partition led before each"
            f" ({', '.join(downtimes)} out of service): {len(self.nodes)} nodes,"
            f" {leaders} partitions led{where}{self._healed_note()}",
            diff,
        )

    def _archive_node(self, node: Node, marker: Marker | None) -> Path | None:
        """The stopped node's data as a checked archive, before it restarts on another
        version (none for a config change, or a node with no data yet)."""
        if marker is None or show(marker.current) == self.env.settings.restate.version:
            return None
        target = self.env.settings.restate.version
        name = f"{self.env.name}-{node.name}-before-{target}-{stamp()}.tar.gz"
        archive = backups_dir(self.env) / name
        write_archive(
            self.env,
            archive,
            server_version=show(marker.current),
            found=[marker],
            deployments=[],
            node=node.name,
        )
        return archive

    def _start_node(self, node: Node, spec: ProcessSpec) -> None:
        self.procs.start(spec)
        wait_until(
            self.while_alive(http_ready(f"{node.ingress_url}/restate/health")),
            60.0,
            f"{node.name}'s ingress did not become ready within 60s after its restart",
        )

    def _go_back(self, node: Node, spec: ProcessSpec, old: str | None, config: str) -> str:
        """`node` started again on version `old` with its old config; what happened."""
        self.procs.stop(node.process)
        binary = self.single.binary_of(old) if old else None
        if binary is None or not binary.is_file() or not config:
            return f"not gone back: no installed restate-server {old} or old config for it"
        self.config_file(node).write_text(config)
        try:
            self._start_node(node, on_binary(spec, binary, config))
            self.wait_for_leaders(120.0)
            wait_until(self.sql_answers, 60.0, "the cluster's SQL did not answer within 60s")
        except NexusError as exc:
            return f"going back to {old} failed too: {exc}"
        return f"went back: {node.name} runs restate-server {old} again"

    def sql_answers(self) -> bool:
        """True when a query over every partition's invocations answers."""
        admin = AdminClient(self.env.admin.url, self.env.token)
        try:
            admin.query("SELECT count(*) AS n FROM sys_invocation")
            return True
        except NexusError:
            return False
        finally:
            admin.close()

    def partition_leaders(self) -> dict[int, str]:
        """Partition id → leader node, from restatectl's cluster tables."""
        sql = (
            "SELECT partition_id, plain_node_id FROM partition_state"
            " WHERE lower(effective_mode) = 'leader' ORDER BY partition_id"
        )
        try:
            rows = sql_rows(self.restatectl, [n.address for n in self.nodes], sql, timeout=20)
        except RestatectlError:
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
        """Until every partition has a leader; a leader-to-be whose log reader stalled
        is worked around on the way (`heal_stalls`)."""
        want = self.env.settings.restate.partitions
        began = time.monotonic()
        deadline = began + timeout
        leaders: dict[int, str] = {}
        next_look = began + STALL_LOOK_S
        while time.monotonic() < deadline:
            self.check_alive()
            leaders = self.partition_leaders()
            if len(leaders) >= want:
                return len(leaders)
            if time.monotonic() >= next_look:
                self.heal_stalls()
                next_look = time.monotonic() + STALL_LOOK_S
            time.sleep(0.5)
        raise NexusError(
            f"only {len(leaders)} of {want} partitions have a leader after {timeout:g}s"
        )

    def heal_stalls(self) -> list[str]:
        """Give each partition whose leader-to-be stalled (`find_stalls`) to the replica
        furthest along, restart the stalled node on what it runs (a fresh log reader),
        then release the pin. Returns (and keeps in `healed`) what was done."""
        if not self.restatectl.is_file():
            return []
        addresses = [n.address for n in self.nodes]
        done: list[str] = []
        for stall in find_stalls(read_replicas(self.restatectl, addresses)):
            partition = stall.stalled.partition
            node = next((n for n in self.nodes if f"N{n.id}" == stall.stalled.node), None)
            if node is None:
                continue
            pin_leader(self.restatectl, addresses, partition, stall.healthy.node)
            try:
                wait_until(
                    functools.partial(self.is_led, partition),
                    30.0,
                    f"partition {partition} had no leader 30s after it was pinned to"
                    f" {stall.healthy.node}",
                )
                self.procs.stop(node.process)
                self._start_node(node, self.running_spec(node))
            finally:
                unpin_leader(self.restatectl, addresses, partition)
            done.append(f"{stall.line()}, {node.name} restarted, pin released")
        self.healed += done
        return done

    def _healed_note(self) -> str:
        return f"; worked around: {'; '.join(self.healed)}" if self.healed else ""

    def is_led(self, partition: int) -> bool:
        return partition in self.partition_leaders()

    def running_spec(self, node: Node) -> ProcessSpec:
        """How `node` runs now: the binary of the version its data was last written by,
        with its config file as it is (mid-roll, a node not rolled yet keeps its old)."""
        spec = self.spec(node)
        marker = next((m for m in markers(self.env.state_dir) if m.node == node.name), None)
        path = self.config_file(node)
        if marker is None or not path.is_file():
            return spec
        binary = self.single.binary_of(show(marker.current))
        return on_binary(spec, binary, path.read_text())

    def status_lines(self) -> list[str]:
        """Nodes with health and PIDs, and who leads each partition."""
        lines = ["cluster nodes"]
        for node in self.nodes:
            info = self.procs.info(node.process)
            healthy = http_ready(f"{node.admin_url}/health")() if info.alive else False
            state = "healthy" if healthy else ("running" if info.alive else "stopped")
            lines.append(
                f"  {node.name} (N{node.id})  {state:<8} pid {info.pid}  ingress {node.ingress_url}"
                f"  admin {node.admin_url}  node {node.address}"
            )
        leaders = self.partition_leaders() if self.restatectl.is_file() else {}
        led = ", ".join(f"p{p}→{n}" for p, n in sorted(leaders.items())) or "unknown"
        lines.append(f"  partition leaders: {led}")
        return [*lines, *snapshot_status(self.store, self.env.settings.restate.partitions)]
