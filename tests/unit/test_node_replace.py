"""Snapshots and node replacement without a server: the `[snapshots]` settings, the
`[worker.snapshots]` config, the slots' members, and the refusals that need no network."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from invoke import Config, Exit, MockContext

import ops.operations.node_replace
import tasks
from ops.base import environments
from ops.base.environments import PROJECT_ROOT, Environment
from ops.base.errors import ConfigError
from ops.base.processes import ProcessManager
from ops.chaos.base import ChaosContext
from ops.chaos.node_replace import node_replace_scenario
from ops.operations.node_replace import ReplaceRefused, _metadata_members, plan, resolve_slot
from ops.server.cluster import ClusterRuntime, node_config
from ops.server.cluster_members import Member, Members, load_members, members_file, save_members
from ops.server.object_store import ACCESS_KEY_ID
from ops.testing.checks import Skip

CLUSTER = (PROJECT_ROOT / "environments" / "cluster.toml").read_text()


def cluster_env(tmp_path: Path, extra: str = "", text: str = CLUSTER) -> Environment:
    file = tmp_path / "cl.toml"
    file.write_text(text + extra + f'\n[state]\ndir = "{tmp_path / "state"}"\n')
    return environments.load(str(file), root=PROJECT_ROOT)


def test_cluster_toml_configures_snapshots_to_the_loopback_store(tmp_path: Path) -> None:
    env = cluster_env(tmp_path)
    runtime = ClusterRuntime(env, ProcessManager(env.state_dir))
    config = tomllib.loads(node_config(env, runtime.nodes[1], runtime.nodes))
    snapshots = config["worker"]["snapshots"]
    assert snapshots["destination"] == "s3://nexus-snapshots/cluster"
    assert snapshots["aws-endpoint-url"] == "http://127.0.0.1:29182"
    assert snapshots["aws-allow-http"] is True and snapshots["aws-region"] == "local"
    assert snapshots["snapshot-interval-num-records"] == 5000
    assert snapshots["snapshot-interval"] == "10m" and snapshots["num-retained"] == 2
    assert snapshots["aws-access-key-id"] == ACCESS_KEY_ID  # a dummy loopback value
    assert 29182 not in env.service_ports  # a new service version never takes its port


def test_snapshot_defaults_and_off(tmp_path: Path) -> None:
    text = CLUSTER.split("[snapshots]")[0]
    env = cluster_env(tmp_path, text=text)
    assert env.snapshot_store.url == f"http://127.0.0.1:{env.gateway.port + 1}"
    runtime = ClusterRuntime(env, ProcessManager(env.state_dir))
    config = tomllib.loads(node_config(env, runtime.nodes[0], runtime.nodes))
    assert config["worker"]["snapshots"]["destination"] == f"s3://nexus-snapshots/{env.name}"
    off = cluster_env(tmp_path, '\n[snapshots]\nstore = "off"\n', text=text)
    runtime = ClusterRuntime(off, ProcessManager(off.state_dir))
    assert "snapshots" not in tomllib.loads(node_config(off, runtime.nodes[0], runtime.nodes)).get(
        "worker", {}
    )
    assert ("snapshot-store", runtime.store.step) in runtime.deploy_steps()


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        ('store = "minio"', "snapshots.store must be one of moto, off, got 'minio'"),
        ('url = "s3://x"', "snapshots.url must be an http(s) URL, got 's3://x'"),
        ('bucket = "My_Bucket"', "snapshots.bucket must be lowercase letters, digits and -"),
        ("interval_records = 0", "snapshots.interval_records must be a positive integer, got 0"),
        ("retention = 3", "unknown key snapshots.retention (known: store, url, bucket"),
    ],
)
def test_bad_snapshot_settings_are_named(tmp_path: Path, section: str, problem: str) -> None:
    text = CLUSTER.split("[snapshots]")[0] + f"\n[snapshots]\n{section}\n"
    with pytest.raises(ConfigError) as info:
        cluster_env(tmp_path, text=text)
    assert problem in str(info.value)


def test_a_replacement_gets_a_new_name_and_an_id_never_used(tmp_path: Path) -> None:
    first = Members({}).replaced(2, 3)
    assert first.member(2) == Member(2, 1, 4) and first.member(2).name == "n2r1"
    second = first.replaced(2, 3).replaced(1, 3)
    assert second.member(2).name == "n2r2" and second.member(2).id == 5
    assert second.member(1).name == "n1r1" and second.member(1).id == 6
    assert second.retired == (2, 4, 1)
    assert second.member(3) == Member(3) and second.member(3).name == "n3"
    save_members(tmp_path, second)
    assert load_members(tmp_path) == second
    members_file(tmp_path).write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable cluster membership record"):
        load_members(tmp_path)


def test_a_replaced_node_joins_and_never_provisions(tmp_path: Path) -> None:
    env = cluster_env(tmp_path)
    save_members(env.state_dir, Members({}).replaced(1, 3))
    runtime = ClusterRuntime(env, ProcessManager(env.state_dir))
    node = runtime.nodes[0]
    assert (node.name, node.id, node.process) == ("n1r1", 4, "restate-n1")
    config = tomllib.loads(node_config(env, node, runtime.nodes))
    assert config["node-name"] == "n1r1" and config["force-node-id"] == 4
    assert config["auto-provision"] is False
    assert config["base-dir"] == str(env.state_dir / "data" / "n1r1")
    assert runtime.config_file(node).name == "restate-n1r1.toml"


def test_refusals_that_need_no_server(tmp_path: Path) -> None:
    single = tmp_path / "single.toml"
    single.write_text(
        '[restate]\nruntime = "binary"\ningress_url = "http://127.0.0.1:1"\n'
        'admin_url = "http://127.0.0.1:2"\n[service]\nmode = "process"\n'
        'url = "http://127.0.0.1:3"\n'
    )
    binary = environments.load(str(single), root=tmp_path)
    with pytest.raises(ReplaceRefused, match="replace-node needs runtime = cluster"):
        plan(binary, "2")
    with pytest.raises(Skip, match="needs runtime = cluster"):
        node_replace_scenario(ChaosContext(binary))
    env = cluster_env(tmp_path)
    runtime = ClusterRuntime(env, ProcessManager(env.state_dir))
    assert resolve_slot(runtime, "N2").index == 2 and resolve_slot(runtime, "3").index == 3
    with pytest.raises(ReplaceRefused, match=r"unknown node '4' in cl \(known: 1 \(n1\)"):
        plan(env, "4")
    with pytest.raises(ReplaceRefused, match="the snapshot store of cl is not running"):
        plan(env, "2")
    off = cluster_env(tmp_path, '\n[snapshots]\nstore = "off"\n', CLUSTER.split("[snapshots]")[0])
    with pytest.raises(ReplaceRefused, match="has no snapshot store"):
        plan(off, "n2")
    with pytest.raises(Skip, match="needs partition snapshots"):
        node_replace_scenario(ChaosContext(off))
    assert not (tmp_path / "state").exists()  # nothing made, nothing changed


def test_metadata_members_are_read_from_the_listing() -> None:
    listing = (
        "Metadata service\n"
        " NODE  STATUS  VERSION  LEADER  MEMBERS     APPLIED\n"
        " N1    Member  v5       N1      [N1,N3,N4]  36\n"
        " N2    Member  v0       -       []          0\n"
    )
    assert _metadata_members(listing) == ["N1", "N3", "N4"]
    assert _metadata_members("Metadata service\n") == []


# --- the tasks: exit code 2 with the reason; --dry runs as --check --------------------------


def test_replace_node_task_refuses_bad_input_with_exit_code_2() -> None:
    with pytest.raises(Exit) as info:
        tasks.replace_node(MockContext(), env="cluster")
    assert info.value.code == 2 and "--node is required" in str(info.value.message)
    with pytest.raises(Exit) as info:
        tasks.replace_node(MockContext(), env="local", node="2")
    assert info.value.code == 2
    assert "replace-node needs runtime = cluster (local runs binary)" in str(info.value.message)
    with pytest.raises(Exit) as info:
        tasks.snapshot(MockContext(), env="local")
    assert info.value.code == 2 and "snapshot needs runtime = cluster" in str(info.value.message)


@pytest.mark.parametrize("name", ["snapshot", "replace_node"])
def test_dry_runs_snapshot_and_replace_node_as_check(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fake_play(env: Any, *args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return type("P", (), {"failed": False})()

    monkeypatch.setattr(ops.operations.node_replace, name, fake_play)
    dry = MockContext(config=Config(overrides={"run": {"dry": True}}))
    getattr(tasks, name)(dry, env="cluster", **({"node": "2"} if name == "replace_node" else {}))
    assert seen["check"] is True
