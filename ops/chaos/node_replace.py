"""Node replacement: under load, snapshot the partitions, SIGKILL a node, delete its data
directory, replace it under a new name (`ops.operations.node_replace`) while booking continues, and
prove that no booking was lost."""

from __future__ import annotations

import io
import shutil
import time

from ops.base.environments import Environment
from ops.base.errors import CheckFailed, NexusError
from ops.base.ids import new_run_id
from ops.base.processes import ProcessManager
from ops.chaos.base import ChaosContext
from ops.chaos.cluster_load import ClusterLoad, p99
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
    load = ClusterLoad(env, urls, f"nodereplace-{new_run_id()}:", workers, duration=600.0)
    replay = io.StringIO()
    snapshot_s = 0.0

    def replace_a_lost_node(load: ClusterLoad) -> None:
        nonlocal snapshot_s
        time.sleep(calm)
        started = time.monotonic()
        snapshots.update(create_snapshots(runtime))
        snapshot_s = time.monotonic() - started
        procs.kill(old.process)
        wait_until(lambda: not procs.info(old.process).alive, 10.0, f"{old.name} outlived SIGKILL")
        load.mark("kill")
        shutil.rmtree(env.state_dir / "data" / old.name)
        play = replace_node(env, str(victim), out=replay)
        load.mark("replaced")
        if play.failed:
            raise NodeReplaceFailed(f"replace-node failed:\n{replay.getvalue()}")
        time.sleep(after)

    snapshots: dict[int, int] = {}
    load.run(replace_a_lost_node)
    t0, events = load.started_at, load.events
    new = ClusterRuntime(env, procs).nodes[victim - 1]
    counts, problems, report = load.outcome(read_through=new.ingress_url)
    window = load.between("kill", "replaced")
    through_new = sum(
        1 for at, url in load.answers if url == new.ingress_url and at - t0 > events["replaced"]
    )
    after_replacement = [b for b in load.bookings if b.started - t0 > events["replaced"]]
    figures = (
        f"{counts}; snapshot of {len(snapshots)} partitions in {snapshot_s:.2f}s;"
        f" {old.name} → {new.name} (N{new.id}) in"
        f" {events['replaced'] - events['kill']:.1f}s, {len(window)} bookings started"
        f" meanwhile (p99 {p99(window):.0f} ms, {p99(load.bookings):.0f} ms overall);"
        f" {len(after_replacement)} bookings after it, {through_new} answered by {new.name};"
        f" errors seen: {sum(load.errors_at.values())};"
        f" {report.lines()[0]}"
    )
    if not after_replacement:
        problems.append("no booking started after the replacement")
    if through_new == 0:
        problems.append(f"the new node {new.name} answered no booking")
    if problems:
        raise NodeReplaceFailed(figures + "\n" + "\n".join(problems[:20]))
    return figures
