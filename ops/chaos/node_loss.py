"""Node loss: SIGKILL one node of a local cluster under load, restart it, and prove that
no booking was lost."""

from __future__ import annotations

import time

from ops.base.environments import Environment
from ops.base.errors import NexusError, NodeLossFailed
from ops.base.ids import new_run_id
from ops.base.processes import http_ready
from ops.chaos.base import ChaosContext
from ops.chaos.cluster_load import ClusterLoad, p99
from ops.release.stack import Stack
from ops.server.cluster import ClusterRuntime
from ops.server.runtimes import wait_until
from ops.testing.checks import Skip


def node_loss_scenario(cx: ChaosContext) -> str:
    """node-loss: SIGKILL a cluster node under load, restart it; no booking lost."""
    if cx.env.runtime != "cluster":
        raise Skip(f"needs runtime = cluster, a node to lose (here: {cx.env.runtime})")
    return node_loss(cx.env)


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
    load = ClusterLoad(env, urls, f"nodeloss-{new_run_id()}:", workers, duration)

    def lose_a_node(load: ClusterLoad) -> None:
        time.sleep(duration * 0.25)
        stack.procs.kill(dead.process)
        load.mark("kill")
        time.sleep(max(0.0, duration * 0.5 - load.events["kill"]))
        load.mark("restart")
        stack.procs.stop(dead.process)
        stack.procs.start(runtime.spec(dead), wait=True)
        runtime.wait_for_leaders(120.0)
        wait_until(
            http_ready(f"{dead.ingress_url}/restate/health"),
            60.0,
            f"{dead.name}'s ingress did not come back",
        )
        load.mark("rejoined")
        time.sleep(max(0.0, duration - (time.monotonic() - load.started_at)))

    load.run(lose_a_node)
    counts, problems, report = load.outcome()
    events = load.events
    figures = (
        f"{counts}; p99 {p99(load.before('kill')):.0f} ms before the kill,"
        f" {p99(load.between('kill', 'rejoined')):.0f} ms while {dead.name} was down;"
        f" errors at {dead.name}'s ingress: {load.errors_at[dead.ingress_url]}, elsewhere: "
        f"{sum(v for u, v in load.errors_at.items() if u != dead.ingress_url)};"
        f" {dead.name} rejoined {events['rejoined'] - events['kill']:.1f}s after the kill"
        f" ({events['rejoined'] - events['restart']:.1f}s after its restart);"
        f" {report.lines()[0]}"
    )
    if problems:
        raise NodeLossFailed(figures + "\n" + "\n".join(problems[:20]))
    return figures
