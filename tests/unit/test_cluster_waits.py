"""The cluster runtime's waits (ops/server/cluster.py) notice a dead node at once instead of
sitting out their timeout."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from ops.base import environments
from ops.base.environments import PROJECT_ROOT
from ops.base.errors import ProcessError
from ops.base.processes import ProcessManager, ProcessSpec
from ops.server.cluster import ClusterRuntime, restatectl_version


def cluster_runtime(tmp_path: Path) -> ClusterRuntime:
    text = (PROJECT_ROOT / "environments" / "cluster.toml").read_text()
    file = tmp_path / "cl.toml"
    file.write_text(text + f'\n[state]\ndir = "{tmp_path / "state"}"\n')
    env = environments.load(str(file), root=PROJECT_ROOT)
    return ClusterRuntime(env, ProcessManager(env.state_dir))


def test_wait_for_leaders_fails_at_once_when_a_node_is_dead(tmp_path: Path) -> None:
    runtime = cluster_runtime(tmp_path)
    first = runtime.nodes[0]
    runtime.procs.log_file(first.process).parent.mkdir(parents=True, exist_ok=True)
    runtime.procs.log_file(first.process).write_text("panic: metadata quorum lost\n")
    started = time.monotonic()
    with pytest.raises(ProcessError) as info:
        runtime.wait_for_leaders(120.0)
    assert time.monotonic() - started < 5
    assert first.name in str(info.value) and "panic: metadata quorum lost" in str(info.value)
    assert str(runtime.procs.log_file(first.process)) in str(info.value)


def test_while_alive_passes_the_probe_through_while_every_node_runs(tmp_path: Path) -> None:
    runtime = cluster_runtime(tmp_path)
    for node in runtime.nodes:  # stand-in processes under the nodes' names
        spec = ProcessSpec(
            name=node.process,
            argv=[sys.executable, "-c", "import time; time.sleep(30)"],
            cwd=tmp_path,
            ports=[],
            ready=lambda: True,
        )
        runtime.procs.start(spec)
    try:
        assert runtime.while_alive(lambda: True)() is True
        assert runtime.while_alive(lambda: False)() is False
        runtime.procs.stop(runtime.nodes[1].process)
        with pytest.raises(ProcessError, match=runtime.nodes[1].name):
            runtime.while_alive(lambda: True)()
    finally:
        for node in runtime.nodes:
            runtime.procs.stop(node.process)


def test_a_server_older_than_any_restatectl_on_npm_gets_the_oldest_one() -> None:
    assert restatectl_version("1.6.2") == "1.7.10"
    assert restatectl_version("1.7.10") == "1.7.10"
    assert restatectl_version("1.7.12") == "1.7.12"
