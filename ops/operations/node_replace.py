"""Replace a cluster node whose data directory is lost (`invoke replace-node`).

A log-server that comes back with an empty disk under its old node name and id is marked
data-loss for good, so the slot gets a new node (`n<slot>r<generation>`, a fresh id) on
the same ports. It bootstraps its partitions from the latest snapshots in the object
store and the log after them, joins the metadata cluster by itself, and the old node
leaves the cluster's view as far as restatectl allows:

1. `metadata`: the old id leaves the metadata cluster (two of three members keep quorum);
2. `member`: the slot's new identity is recorded (`ops.server.cluster_members`), its config written;
3. `start`: the new node starts, every partition has a leader, its ingress answers;
4. `retire`: the old log-server is made read-only, every log gets a nodeset of the live
   nodes, snapshots trim the logs past the old node's segments, and `restatectl nodes
   remove` deletes it from the node table;
5. `bootstrap`: the new node runs partition processors, restored from the snapshots
   (its log says how many it downloaded).

Every refusal (not a cluster, unknown node, a node still running or with data, a peer
down, no snapshot of some partition) happens before any step and changes nothing."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

from ops.base.environments import Environment
from ops.base.errors import ApiError, NexusError, NotConverged
from ops.base.processes import ProcessManager, http_ready
from ops.base.steps import Play, Result, StepContext
from ops.clients.admin import IngressClient
from ops.server.cluster import ClusterRuntime, Node, node_config
from ops.server.cluster_members import load_members, save_members
from ops.server.object_store import STORE
from ops.server.restatectl import RestatectlError
from ops.server.runtimes import wait_until
from ops.server.snapshots import (
    create_snapshots,
    missing_partitions,
    restatectl,
    snapshot_step,
    sql,
)

RETIRE_TIMEOUT_S = 60.0
BOOTSTRAP_TIMEOUT_S = 60.0
NUDGE_PREFIX = "nexus-smoke:replace-"  # keys of the read-only calls that move a log on


class ReplaceRefused(NexusError):
    """replace-node will not act: the node, the cluster or the store is not in a state
    where a replacement is safe or needed. Nothing was changed."""


@dataclass
class Replacement:
    """One slot's replacement: the node that was lost and the one that takes its place."""

    env: Environment
    runtime: ClusterRuntime
    old: Node
    new: Node
    events: dict[str, float] = field(default_factory=dict)
    log_offset: int = 0

    @property
    def old_label(self) -> str:
        return f"{self.old.name} (N{self.old.id})"

    @property
    def new_label(self) -> str:
        return f"{self.new.name} (N{self.new.id})"


def resolve_slot(runtime: ClusterRuntime, node: str) -> Node:
    """`--node`: a slot number (1-based) or the current name of a node (`n2`, `n2r1`)."""
    wanted = node.strip().lower()
    for n in runtime.nodes:
        if wanted in (str(n.index), n.name, f"n{n.index}"):
            return n
    known = ", ".join(f"{n.index} ({n.name})" for n in runtime.nodes)
    raise ReplaceRefused(f"unknown node {node!r} in {runtime.env.name} (known: {known})")


def plan(env: Environment, node: str) -> Replacement:
    """Check everything a replacement needs; refuse with the reason, changing nothing."""
    if env.runtime != "cluster":
        raise ReplaceRefused(
            f"replace-node needs runtime = cluster ({env.name} runs {env.runtime})"
        )
    procs = ProcessManager(env.state_dir)
    runtime = ClusterRuntime(env, procs)
    old = resolve_slot(runtime, node)
    if not runtime.store.enabled:
        raise ReplaceRefused(
            f'{env.name} has no snapshot store ([snapshots] store = "off"): a new node'
            " could only replay the whole log, which Restate trims; turn snapshots on first"
        )
    if not procs.info(STORE).alive:
        raise ReplaceRefused(f"the snapshot store of {env.name} is not running (`invoke deploy`)")
    missing = missing_partitions(runtime)
    if missing:
        raise ReplaceRefused(
            f"no snapshot yet of partition(s) {', '.join(map(str, missing))} in"
            f" {runtime.store.destination}: a new node bootstraps from them; take one with"
            f" `invoke snapshot --env {env.name}`"
        )
    info = procs.info(old.process)
    data = env.state_dir / "data" / old.name
    if info.alive:
        raise ReplaceRefused(
            f"{old.name} is still running (pid {info.pid}) on its data in {data}: replace-node"
            " is for a node whose data directory is lost, and this one has not lost it"
        )
    if data.is_dir() and any(data.iterdir()):
        raise ReplaceRefused(
            f"{old.name} is stopped but its data directory {data} still holds data: restart it"
            f" with `invoke deploy --env {env.name}`; replace it only if that disk is lost"
        )
    down = [n.name for n in runtime.nodes if n != old and not procs.info(n.process).alive]
    if down:
        raise ReplaceRefused(
            f"{', '.join(down)} not running: replacing {old.name} needs every other node up"
            " (metadata quorum and the log's replicas)"
        )
    members = load_members(env.state_dir).replaced(old.index, len(runtime.nodes))
    new = Node(old.index, old.host, old.ingress_port, old.admin_port, old.node_port,
               members.member(old.index))  # fmt: skip
    return Replacement(env, runtime, old, new)


def replace_node(
    env: Environment, node: str, *, check: bool = False, out: TextIO | None = None
) -> Play:
    """Replace a node that lost its data (see the module's doc); refusals raise first."""
    job = plan(env, node)
    play = Play(
        f"replace-node {env.name} {job.old.name} → {job.new.name}",
        StepContext(check=check),
        out=out or sys.stdout,
    )
    for name, step in (
        ("metadata", lambda ctx: _leave_metadata(job, ctx)),
        ("member", lambda ctx: _record_member(job, ctx)),
        ("start", lambda ctx: _start(job, ctx)),
        ("retire", lambda ctx: _retire(job, ctx)),
        ("bootstrap", lambda ctx: _bootstrapped(job, ctx)),
    ):
        play.run(name, step)
        if play.failed:
            break
    play.recap()
    return play


def _leave_metadata(job: Replacement, ctx: StepContext) -> Result:
    listing = restatectl(job.runtime, "metadata-server", "list-servers")
    members = _metadata_members(listing)
    if f"N{job.old.id}" not in members:
        return Result.ok(f"N{job.old.id} is not in the metadata cluster ({', '.join(members)})")
    if ctx.check:
        return Result.changed(f"would remove N{job.old.id} from the metadata cluster")
    job.events["start"] = time.monotonic()
    restatectl(job.runtime, "metadata-server", "remove-node", str(job.old.id))
    return Result.changed(f"removed N{job.old.id} from the metadata cluster")


def _metadata_members(listing: str) -> list[str]:
    """The MEMBERS column of `metadata-server list-servers` as the leader sees it."""
    for line in listing.splitlines():
        if "[" in line and "]" in line:
            inside = line[line.index("[") + 1 : line.index("]")]
            if inside:
                return [m.strip() for m in inside.split(",")]
    return []


def _record_member(job: Replacement, ctx: StepContext) -> Result:
    new, env = job.new, job.env
    if ctx.check:
        return Result.changed(f"would record slot {new.index} as {job.new_label} and write its"
                              f" config to {job.runtime.config_file(new)}")  # fmt: skip
    job.events.setdefault("start", time.monotonic())
    members = load_members(env.state_dir).replaced(new.index, len(job.runtime.nodes))
    assert members.member(new.index) == new.identity
    save_members(env.state_dir, members)
    job.runtime.nodes[new.index - 1] = new
    config = job.runtime.config_file(new)
    config.write_text(node_config(env, new, job.runtime.nodes))
    if job.runtime.config_file(job.old) != config:
        job.runtime.config_file(job.old).unlink(missing_ok=True)
    (env.state_dir / "data" / new.name).mkdir(parents=True, exist_ok=True)
    return Result.changed(f"slot {new.index} is {job.new_label} (was {job.old_label})")


def _start(job: Replacement, ctx: StepContext) -> Result:
    runtime, new = job.runtime, job.new
    if ctx.check:
        return Result.changed(
            f"would start {job.new_label} on {new.address} and wait until it has loaded the"
            " partitions' snapshots and every partition has a leader"
        )
    log = runtime.procs.log_file(new.process)
    job.log_offset = log.stat().st_size if log.is_file() else 0
    runtime.procs.stop(new.process)
    runtime.procs.start(runtime.spec(new), wait=True)
    leaders = runtime.wait_for_leaders(120.0)
    wait_until(
        runtime.while_alive(http_ready(f"{new.ingress_url}/restate/health")),
        60.0,
        f"{new.name}'s ingress did not become ready within 60s",
    )
    job.events["started"] = time.monotonic()
    seconds = job.events["started"] - job.events["start"]
    return Result.changed(f"{job.new_label} up, {leaders} partitions led ({seconds:.1f}s)")


def downloaded_snapshots(job: Replacement) -> int:
    """How many partition snapshots the new node's log says it downloaded."""
    log = job.runtime.procs.log_file(job.new.process)
    if not log.is_file():
        return 0
    with log.open("rb") as f:
        f.seek(job.log_offset)
        text = f.read().decode(errors="replace")
    return text.count("Downloaded partition snapshot")


def _retire(job: Replacement, ctx: StepContext) -> Result:
    old_id = job.old.id
    if ctx.check:
        return Result.changed(
            f"would make N{old_id}'s log-server read-only, move every log to a nodeset of"
            f" the live nodes, trim the logs with fresh snapshots and remove N{old_id}"
        )
    runtime = job.runtime
    restatectl(runtime, "nodes", "set-storage-state", "--nodes", str(old_id),
               "--storage-state", "read-only")  # fmt: skip
    nodeset = ",".join(f"N{n.id}" for n in runtime.nodes)
    logs = range(job.env.settings.restate.partitions)  # one log per partition
    for log_id in logs:
        restatectl(runtime, "logs", "reconfigure", "--log-id", str(log_id), "--nodeset", nodeset)
    deadline = time.monotonic() + RETIRE_TIMEOUT_S
    attempts, last = 0, ""
    while time.monotonic() < deadline:
        attempts += 1
        try:
            create_snapshots(runtime, trim=True)
            restatectl(runtime, "nodes", "remove", "--nodes", str(old_id))
            break
        except RestatectlError as exc:
            last = str(exc)
        _nudge(job, attempts)
        time.sleep(1.0)
    else:
        return Result.changed(
            f"N{old_id} is read-only and out of every new nodeset, but restatectl would not"
            f" remove it within {RETIRE_TIMEOUT_S:g}s: {last}"
        )
    job.events["retired"] = time.monotonic()
    return Result.changed(f"N{old_id} removed from the cluster; logs on [{nodeset}]")


def _bootstrapped(job: Replacement, ctx: StepContext) -> Result:
    """Wait until the new node runs partition processors, restored from snapshots."""
    if ctx.check:
        return Result.changed(f"would wait until {job.new.name} runs partitions from snapshots")
    runtime, new_id = job.runtime, f"N{job.new.id}"
    query = (
        "SELECT partition_id, effective_mode, replay_status FROM partition_state"
        f" WHERE plain_node_id = '{new_id}' ORDER BY partition_id"
    )
    rows: list[dict[str, object]] = []
    deadline = time.monotonic() + BOOTSTRAP_TIMEOUT_S
    while time.monotonic() < deadline:
        runtime.check_alive()
        rows = [r for r in sql(runtime, query) if r.get("replay_status") == "active"]
        if rows:
            break
        time.sleep(0.5)
    else:
        raise NotConverged(
            f"{job.new.name} runs no partition {BOOTSTRAP_TIMEOUT_S:g}s after joining"
        )
    job.events["bootstrapped"] = time.monotonic()
    runs = ", ".join(f"p{r['partition_id']} {str(r['effective_mode']).lower()}" for r in rows)
    return Result.changed(
        f"{job.new.name} runs {runs}; restored {downloaded_snapshots(job)} partition"
        f" snapshot(s) from the store ({job.events['bootstrapped'] - job.events['start']:.1f}s"
        " in all)"
    )


def _nudge(job: Replacement, attempt: int) -> None:
    """A few read-only calls, so that every partition's log moves past the old segments
    (a snapshot can only trim what its partition has applied)."""
    client = IngressClient(job.new.ingress_url, job.env.token, timeout=5.0)
    try:
        for i in range(4 * job.env.settings.restate.partitions):
            try:
                client.call("Ticket", "get", key=f"{NUDGE_PREFIX}{attempt}-{i}")
            except ApiError:
                return
    finally:
        client.close()


def snapshot(env: Environment, *, check: bool = False, out: TextIO | None = None) -> Play:
    """`invoke snapshot`: every partition of a cluster snapshotted to its store now."""
    if env.runtime != "cluster":
        raise NexusError(f"snapshot needs runtime = cluster ({env.name} runs {env.runtime})")
    runtime = ClusterRuntime(env, ProcessManager(env.state_dir))
    play = Play(f"snapshot {env.name}", StepContext(check=check), out=out or sys.stdout)
    play.run("snapshot", snapshot_step(runtime))
    play.recap()
    return play
