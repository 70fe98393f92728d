"""A 3-node Restate cluster on free loopback ports: deploy (idempotent), the contract
through the first node, bookings through every node, the loss of a node under load, the
replacement of a node whose disk is lost (snapshots in a loopback S3 store), and the
upgrade from 1.6 rolled under load."""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.base import environments
from ops.base.environments import PROJECT_ROOT, Environment
from ops.base.processes import free_port, group_alive
from ops.base.steps import StepContext
from ops.chaos import run_chaos
from ops.chaos.cluster_upgrade import PREVIOUS_MINOR, WARM_UP_BOOKINGS, pinned
from ops.chaos.node_loss import node_loss
from ops.operations.node_replace import ReplaceRefused, replace_node, snapshot
from ops.release.stack import Stack, deploy, down, status_lines
from ops.server.cluster import ClusterRuntime, nodes
from ops.server.cluster_features import read_features
from ops.server.data_archive import backups_dir, read_manifest
from ops.server.runtimes import wait_until
from ops.server.snapshots import restatectl
from ops.testing.checks import run_checks
from ops.testing.scenarios import Scenarios

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Environment]:
    base = tmp_path_factory.mktemp("cluster")
    ingress, admin, node = ([free_port() for _ in range(3)] for _ in range(3))
    file = base / "itcluster.toml"
    file.write_text(f"""
[restate]
runtime = "cluster"
ingress_url = "http://127.0.0.1:{ingress[0]}"
admin_url = "http://127.0.0.1:{admin[0]}"
partitions = 2

[cluster]
nodes = 3
replication = 2
ingress_ports = {ingress}
admin_ports = {admin}
node_ports = {node}

[service]
mode = "process"
url = "http://127.0.0.1:{free_port()}"
hold_seconds = 5

[gateway]
url = "http://127.0.0.1:{free_port()}"

[snapshots]
url = "http://127.0.0.1:{free_port()}"
interval_records = 10000000  # only the tests' own snapshots: none before they ask for one

[state]
dir = "{base / "state"}"
""")
    env = environments.load(str(file), root=PROJECT_ROOT)
    out = io.StringIO()
    play = deploy(env, out=out)
    try:
        assert not play.failed, out.getvalue()
        yield env
    finally:
        down(env, purge=True, out=io.StringIO())


def test_cluster_deploy_is_idempotent_and_lists_every_ingress(cluster_env: Environment) -> None:
    out = io.StringIO()
    deploy(cluster_env, out=out)
    assert "changed=0 failed=0" in out.getvalue().splitlines()[-1]
    assert len(cluster_env.ingress_urls) == 3
    runtime = Stack(cluster_env).runtime
    assert isinstance(runtime, ClusterRuntime)
    assert len(runtime.partition_leaders()) == 2


def test_contract_scenarios_through_the_cluster(cluster_env: Environment) -> None:
    scenarios = Scenarios(cluster_env, buyers=10, bulk=12)
    checks = [c for c in scenarios.all() if c[0] != "bulk-bookings"]
    out = io.StringIO()
    outcomes = run_checks(checks, out=out)
    assert all(o.status == "passed" for o in outcomes), out.getvalue()


def test_losing_a_node_under_load_loses_no_booking(cluster_env: Environment) -> None:
    figures = node_loss(cluster_env, duration=12.0, workers=4)
    assert "0 unresolved, 0 lost" in figures and "audit ok" in figures


def test_rollout_on_the_cluster(cluster_env: Environment) -> None:
    out = io.StringIO()
    outcomes = run_chaos(cluster_env, "rollout", out=out)
    assert outcomes[0].status == "passed", out.getvalue()
    assert "0 journal mismatches" in outcomes[0].detail


def test_replace_node_refuses_without_changing_anything(cluster_env: Environment) -> None:
    """Unknown node, no snapshot yet, a node still running, a stopped node that still has
    its data: each refused with the reason, before any step; `--check` acts on nothing."""
    stack = Stack(cluster_env)
    runtime = stack.runtime
    assert isinstance(runtime, ClusterRuntime)
    pids = {n: stack.procs.info(n).pid for n in stack.procs.known()}
    configs = {p: p.read_text() for p in cluster_env.state_dir.glob("restate-*.toml")}
    members = cluster_env.state_dir / "cluster-members.json"
    with pytest.raises(ReplaceRefused, match=r"unknown node 'n9' .*known: 1 \(n1\), 2 \(n2\)"):
        replace_node(cluster_env, "n9", out=io.StringIO())
    with pytest.raises(ReplaceRefused, match=r"no snapshot yet of partition\(s\) 0, 1 in s3://"):
        replace_node(cluster_env, "2", out=io.StringIO())
    out = io.StringIO()
    assert not snapshot(cluster_env, out=out).failed, out.getvalue()
    assert "2 partitions in" in out.getvalue()
    with pytest.raises(ReplaceRefused, match="n2 is still running"):
        replace_node(cluster_env, "2", out=io.StringIO())
    n3 = runtime.nodes[2]
    stack.procs.kill(n3.process)
    wait_until(lambda: not stack.procs.info(n3.process).alive, 10.0, "n3 outlived SIGKILL")
    try:
        with pytest.raises(ReplaceRefused, match="n3 is stopped but its data directory"):
            replace_node(cluster_env, "n3", out=io.StringIO())
        data = cluster_env.state_dir / "data" / "n3"
        aside = data.with_name("n3-aside")
        data.rename(aside)  # the disk "lost", for a check-mode run only
        try:
            out = io.StringIO()
            replace_node(cluster_env, "3", check=True, out=out)
            assert "changed=5 failed=0" in out.getvalue().splitlines()[-1], out.getvalue()
            assert "would start n3r1 (N4)" in out.getvalue()
        finally:
            aside.rename(data)
        assert not members.exists()
        assert {p: p.read_text() for p in cluster_env.state_dir.glob("restate-*.toml")} == configs
    finally:
        out = io.StringIO()
        assert not deploy(cluster_env, out=out).failed, out.getvalue()
    assert all(stack.procs.info(n).pid == pid for n, pid in pids.items() if n != n3.process)
    lines = "\n".join(status_lines(cluster_env))
    assert f"snapshots: s3://nexus-snapshots/{cluster_env.name} at" in lines
    assert re.search(r"p0  snap_\w+  lsn \d+", lines) and re.search(r"p1  snap_\w+", lines)


def test_replacing_a_node_under_load_loses_no_booking(cluster_env: Environment) -> None:
    out = io.StringIO()
    outcomes = run_chaos(cluster_env, "node-replace", out=out)
    assert outcomes[0].status == "passed", out.getvalue()
    assert "0 unresolved, 0 lost" in outcomes[0].detail and "audit ok" in outcomes[0].detail
    runtime = Stack(cluster_env).runtime
    assert isinstance(runtime, ClusterRuntime)
    assert [n.name for n in runtime.nodes] == ["n1", "n2r1", "n3"]
    table = restatectl(runtime, "nodes", "list")
    assert "n2r1" in table and " n2 " not in table
    out = io.StringIO()
    deploy(cluster_env, out=out)  # the replacement is the cluster's wanted state now
    assert "changed=0 failed=0" in out.getvalue().splitlines()[-1], out.getvalue()


def test_the_minor_upgrade_rolls_the_cluster_one_node_at_a_time_under_load(
    cluster_env: Environment,
) -> None:
    pinned_version = cluster_env.settings.restate.version
    out = io.StringIO()
    outcomes = run_chaos(cluster_env, "cluster-minor-upgrade", out=out)
    assert outcomes[0].status == "passed", out.getvalue()
    detail = outcomes[0].detail
    assert "0 unresolved, 0 lost" in detail and "audit ok" in detail, detail
    booked = re.search(rf"(\d+) booked on {PREVIOUS_MINOR} and", detail)
    assert booked and int(booked[1]) >= WARM_UP_BOOKINGS, detail
    # Rolled up under load, three nodes each with its own time out of service.
    assert len(re.findall(r"\bn\d+(?:r\d+)? \d+\.\ds", detail)) == 3, detail
    # Each node's data was archived before it restarted on the other version.
    for target, written in ((PREVIOUS_MINOR, pinned_version), (pinned_version, PREVIOUS_MINOR)):
        found = backups_dir(cluster_env).glob(f"{cluster_env.name}-*-before-{target}-*.tar.gz")
        manifests = [read_manifest(path) for path in found]
        assert sorted(m["node"] for m in manifests) == [n.name for n in nodes(cluster_env)]
        assert all(m["server_version"] == written and m["files"] for m in manifests)
        assert all(name.startswith(f"{m['node']}/") for m in manifests for name in m["files"])
    # 1.6.2 dropped the feature that would place idempotent calls apart from 1.6's way.
    assert read_features(cluster_env, pinned_version, StepContext()).names == ()


FAILING_NODE = """#!/bin/sh
# A restate-server release that does not come up: what a broken upgrade looks like.
echo "this build of restate-server cannot start" >&2
exit 3
"""


def test_a_node_that_does_not_come_up_on_the_new_version_goes_back_and_the_roll_stops(
    cluster_env: Environment,
) -> None:
    runtime = ClusterRuntime(cluster_env, Stack(cluster_env).procs)
    broken = pinned(cluster_env, "1.7.99")
    fake = ClusterRuntime(broken, runtime.procs)
    npm = fake.single.binary.parents[4]
    try:
        fake.single.binary.parent.mkdir(parents=True)
        fake.single.binary.write_text(FAILING_NODE)
        fake.single.binary.chmod(0o755)
        fake.restatectl.parent.mkdir(parents=True)
        fake.restatectl.symlink_to(runtime.restatectl)
        out = io.StringIO()
        assert deploy(broken, out=out).failed
        text = " ".join(out.getvalue().split())
        assert "n1 did not come up on restate-server 1.7.99" in text, text
        assert "went back: n1 runs restate-server 1.7.12 again" in text, text
        assert "the nodes rolled before it (none)" in text, text
        kept = re.search(r"its data before the roll: (\S+\.tar\.gz)", text)
        assert kept, text
        manifest = read_manifest(Path(kept[1]))
        assert (manifest["node"], manifest["server_version"]) == ("n1", "1.7.12"), manifest
    finally:
        shutil.rmtree(npm, ignore_errors=True)
    assert all(runtime.procs.info(n.process).alive for n in runtime.nodes)
    resp = Stack(cluster_env).ingress.call("Ticket", "get", key="back:1", timeout=30)
    assert resp.status_code == 200, resp.text
    out = io.StringIO()
    assert not deploy(cluster_env, out=out).failed, out.getvalue()
    assert re.search(r"^ok\s+cluster", out.getvalue(), re.M), out.getvalue()


def test_down_stops_every_node(tmp_path: Path, cluster_env: Environment) -> None:
    stack = Stack(cluster_env)
    pids = [stack.procs.info(n).pid for n in stack.procs.known()]
    assert len(pids) == 6  # 3 nodes, the snapshot store, the gateway, the service
    down(cluster_env, out=io.StringIO())
    assert all(pid is not None and not group_alive(pid) for pid in pids)
    assert stack.procs.known() == []
