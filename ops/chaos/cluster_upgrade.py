"""Cluster upgrade: roll every node of a local cluster to another restate-server version
while buyers book through every node, and prove that no booking was lost and that no node
was out of service beside another. cluster-upgrade rolls to the previous patch and back
under load; cluster-minor-upgrade brings the cluster to the previous minor first, with no
buyers, and rolls the supported upgrade (1.6 → 1.7) under load."""

from __future__ import annotations

import io
import time

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
    """cluster-minor-upgrade: the cluster on the previous minor, then rolled up under load."""
    _need_cluster(cx.env)
    return cluster_upgrade(cx.env, previous=PREVIOUS_MINOR, down_under_load=False)


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


def cluster_upgrade(
    env: Environment, *, workers: int = 4, previous: str = PREVIOUS, down_under_load: bool = True
) -> str:
    """Install `previous`, roll the cluster to it (a rollback the data allows) and back to
    the pinned version, one node at a time each, with buyers booking through every node.
    Without `down_under_load` the rollback is done first with no buyers (as between
    minors, where it also lets go of the keys of a cluster provisioned by 1.7), and the
    buyers book on `previous` before and through the roll up. Returns figures."""
    procs = ProcessManager(env.state_dir)
    runtime = ClusterRuntime(env, procs)
    if len(runtime.nodes) < 3 or not all(procs.info(n.process).alive for n in runtime.nodes):
        raise NexusError("cluster-upgrade needs a running cluster of 3 nodes or more: deploy")
    pinned_version = env.settings.restate.version
    older = pinned(env, previous)
    ClusterRuntime(older, procs).install(StepContext())  # npm time stays out of the figures
    plays: dict[str, str] = {}

    def roll(label: str, target: Environment, options: ReleaseOptions) -> None:
        out = io.StringIO()
        play = deploy(target, out=out, options=options)
        plays[label] = out.getvalue()
        if play.failed:
            raise ClusterUpgradeFailed(f"the roll {label} failed:\n{out.getvalue()}")

    rollback = ReleaseOptions(allow_downgrade=True, allow_resharding=not down_under_load)
    quiet_down = 0.0
    if not down_under_load:
        began = time.monotonic()
        roll("down", older, rollback)
        quiet_down = time.monotonic() - began

    def rolls(load: ClusterLoad) -> None:
        if down_under_load:
            load.mark("down-start")
            roll("down", older, rollback)
            load.mark("down-end")
        else:
            _wait_for_answers(load, WARM_UP_BOOKINGS)
        load.mark("up-start")
        roll("up", env, ReleaseOptions())
        load.mark("up-end")

    load = ClusterLoad(env, [n.ingress_url for n in runtime.nodes], f"rollup-{new_run_id()}:",
                       workers, duration=600.0)  # fmt: skip
    load.run(rolls)
    counts, problems, report = load.outcome()
    written = sorted({show(m.current) for m in markers(env.state_dir)})
    if written != [pinned_version]:
        problems.append(f"the nodes' data markers say {written}, not {pinned_version}")
    rolled = {label: _rolled_line(plays[label]) for label in ("down", "up")}
    events = load.events
    up = f"{events['up-end'] - events['up-start']:.1f}s ({rolled['up']})"
    if down_under_load:
        down = f"{events['down-end'] - events['down-start']:.1f}s ({rolled['down']})"
        story = f"{pinned_version} → {previous} in {down}, back in {up}"
        rolling = load.between("down-start", "up-end")
    else:
        before = len(load.before("up-start"))
        story = (
            f"{pinned_version} → {previous} with no buyers in {quiet_down:.1f}s, then"
            f" {before} booked on {previous} and {previous} → {pinned_version} under load"
            f" in {up}"
        )
        rolling = load.between("up-start", "up-end")
    figures = (
        f"{counts}; {story}; p99 {p99(rolling):.0f} ms while rolling; buyers' retries per"
        f" node: {', '.join(str(v) for v in load.errors_at.values())}; {report.lines()[0]}"
    )
    if problems:
        raise ClusterUpgradeFailed(figures + "\n" + "\n".join(problems[:20]))
    return figures


#: How many bookings the buyers make on the previous minor before the roll up starts.
WARM_UP_BOOKINGS = 8


def _wait_for_answers(load: ClusterLoad, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while len(load.answers) < count:
        if time.monotonic() > deadline:
            raise ClusterUpgradeFailed(f"fewer than {count} bookings answered in {timeout:.0f}s")
        time.sleep(0.1)


def _rolled_line(output: str) -> str:
    """The cluster step's own account of a roll: each node's time out of service."""
    text = " ".join(output.split())
    start = text.find("before each (")
    end = text.find(" out of service", start)
    return text[start + len("before each (") : end] if start >= 0 and end > 0 else "no roll"
