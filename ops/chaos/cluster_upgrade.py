"""Cluster upgrade: roll every node of a local cluster to another restate-server version
and back while buyers book through every node, and prove that no booking was lost and
that no node was out of service beside another."""

from __future__ import annotations

import io

from ops.base import environments
from ops.base.environments import Environment
from ops.base.errors import CheckFailed, NexusError
from ops.base.ids import new_run_id
from ops.base.processes import ProcessManager
from ops.base.steps import StepContext
from ops.chaos.base import ChaosContext
from ops.chaos.cluster_load import ClusterLoad, p99
from ops.release.release import ReleaseOptions
from ops.release.stack import deploy
from ops.server.cluster import ClusterRuntime
from ops.server.server_upgrade import markers, show
from ops.testing.checks import Skip

#: The version cluster-upgrade rolls down to and back up from: the newest patch npm serves
#: before the pinned 1.7.12 (it has no 1.7.11).
PREVIOUS = "1.7.10"
#: cluster-minor-upgrade's: the previous minor, whose 1.6.0 the 1.7 data's window keeps, so
#: the 1.6 → 1.7 upgrade is rolled under load (a mixed-version cluster in between).
PREVIOUS_MINOR = "1.6.2"


class ClusterUpgradeFailed(CheckFailed):
    """cluster-upgrade lost or left unanswered a booking, or a roll failed."""


def cluster_upgrade_scenario(cx: ChaosContext) -> str:
    """cluster-upgrade: roll the cluster to the previous patch and back under load."""
    _need_cluster(cx.env)
    return cluster_upgrade(cx.env)


def cluster_minor_upgrade_scenario(cx: ChaosContext) -> str:
    """cluster-minor-upgrade: roll the cluster to the previous minor and back under load."""
    _need_cluster(cx.env)
    return cluster_upgrade(cx.env, previous=PREVIOUS_MINOR)


def _need_cluster(env: Environment) -> None:
    if env.runtime != "cluster":
        raise Skip(f"needs runtime = cluster, nodes to roll (here: {env.runtime})")


def pinned(env: Environment, version: str) -> Environment:
    """The same environment (file name, ports, state) with `[restate] version` changed."""
    lines = [ln for ln in env.file.read_text().splitlines() if not ln.startswith("version =")]
    text = "\n".join(lines).replace("[restate]", f'[restate]\nversion = "{version}"', 1)
    file = env.state_dir / "chaos" / f"restate-{version}" / env.file.name
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(text + "\n")
    return environments.load(str(file), root=env.root)


def cluster_upgrade(env: Environment, *, workers: int = 4, previous: str = PREVIOUS) -> str:
    """Install `previous`, then under load roll the cluster to it (a rollback the data
    allows) and back to the pinned version, one node at a time each. Returns figures."""
    procs = ProcessManager(env.state_dir)
    runtime = ClusterRuntime(env, procs)
    if len(runtime.nodes) < 3 or not all(procs.info(n.process).alive for n in runtime.nodes):
        raise NexusError("cluster-upgrade needs a running cluster of 3 nodes or more: deploy")
    pinned_version = env.settings.restate.version
    older = pinned(env, previous)
    ClusterRuntime(older, procs).install(StepContext())  # npm time stays out of the figures
    plays: dict[str, str] = {}

    def roll_down_and_up(load: ClusterLoad) -> None:
        for label, target, options in (
            ("down", older, ReleaseOptions(allow_downgrade=True)),
            ("up", env, ReleaseOptions()),
        ):
            out = io.StringIO()
            load.mark(f"{label}-start")
            play = deploy(target, out=out, options=options)
            load.mark(f"{label}-end")
            plays[label] = out.getvalue()
            if play.failed:
                raise ClusterUpgradeFailed(f"the roll {label} failed:\n{out.getvalue()}")

    load = ClusterLoad(env, [n.ingress_url for n in runtime.nodes], f"rollup-{new_run_id()}:",
                       workers, duration=600.0)  # fmt: skip
    load.run(roll_down_and_up)
    counts, problems, report = load.outcome()
    written = sorted({show(m.current) for m in markers(env.state_dir)})
    if written != [pinned_version]:
        problems.append(f"the nodes' data markers say {written}, not {pinned_version}")
    rolled = [_rolled_line(plays[label]) for label in ("down", "up")]
    events = load.events
    figures = (
        f"{counts}; {pinned_version} → {previous} in"
        f" {events['down-end'] - events['down-start']:.1f}s ({rolled[0]}), back in"
        f" {events['up-end'] - events['up-start']:.1f}s ({rolled[1]}); p99"
        f" {p99(load.between('down-start', 'up-end')):.0f} ms while rolling; buyers' retries"
        f" per node: {', '.join(str(v) for v in load.errors_at.values())}; {report.lines()[0]}"
    )
    if problems:
        raise ClusterUpgradeFailed(figures + "\n" + "\n".join(problems[:20]))
    return figures


def _rolled_line(output: str) -> str:
    """The cluster step's own account of a roll: each node's time out of service."""
    text = " ".join(output.split())
    start = text.find("before each (")
    end = text.find(" out of service", start)
    return text[start + len("before each (") : end] if start >= 0 and end > 0 else "no roll"
