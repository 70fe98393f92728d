"""A 3-node Restate cluster on free loopback ports: deploy (idempotent), the contract
through the first node, bookings through every node, and the loss of a node under load."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops import environments
from ops.chaos import run_chaos
from ops.chaos.node_loss import node_loss
from ops.checks import run_checks
from ops.cluster import ClusterRuntime
from ops.environments import PROJECT_ROOT, Environment
from ops.processes import free_port, group_alive
from ops.scenarios import Scenarios
from ops.stack import Stack, deploy, down

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


def test_down_stops_every_node(tmp_path: Path, cluster_env: Environment) -> None:
    stack = Stack(cluster_env)
    pids = [stack.procs.info(n).pid for n in stack.procs.known()]
    assert len(pids) == 5
    down(cluster_env, out=io.StringIO())
    assert all(pid is not None and not group_alive(pid) for pid in pids)
    assert stack.procs.known() == []
