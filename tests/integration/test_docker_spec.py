"""The variables the Docker runtime gives its container, read back by the restate-server
the image runs (the pinned binary from npm, on this machine: no Docker engine needed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ops.base import environments
from ops.base.processes import ProcessManager
from ops.base.steps import StepContext
from ops.server.docker_runtime import DockerRuntime
from ops.server.runtimes import BinaryRuntime


def test_restate_server_reads_the_variables_the_container_is_given(tmp_path: Path) -> None:
    file = tmp_path / "dock.toml"
    file.write_text(
        f"""
[restate]
runtime = "docker"
ingress_url = "http://127.0.0.1:18080"
admin_url = "http://127.0.0.1:19070"
partitions = 3

[service]
mode = "url"
url = "http://127.0.0.1:1"
signing = true

[state]
dir = "{tmp_path / "state"}"
"""
    )
    env = environments.load(str(file), root=environments.PROJECT_ROOT)
    binary = BinaryRuntime(env, ProcessManager(env.state_dir))
    binary.install(StepContext())  # the npm install the project shares; raises if it cannot
    spec = DockerRuntime(env).spec()
    variables = dict(spec[i + 1].split("=", 1) for i, a in enumerate(spec) if a == "--env")
    dump = subprocess.run(
        [str(binary.binary), "--dump-config"],
        env={**os.environ, **variables},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "default-num-partitions = 3" in dump
    assert 'base-dir = "/restate-data"' in dump
    assert 'request-identity-private-key-pem-file = "/restate-signing/private.pem"' in dump
    assert 'node-name = "nexus-dock"' in dump  # fixed: a new container keeps the data
    assert 'bind-address = "127.0.0.1:18080"' in dump  # ingress
    assert 'bind-address = "127.0.0.1:19070"' in dump  # admin
