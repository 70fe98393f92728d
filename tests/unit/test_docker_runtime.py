"""The Docker runtime's convergence, against a stand-in `docker` client on PATH (this
machine has no Docker engine). The stand-in keeps its containers in a JSON file; two
loopback HTTP servers answer the health checks a started container would."""

from __future__ import annotations

import json
import os
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ops import environments
from ops.environments import Environment
from ops.runtimes import DockerRuntime
from ops.steps import Context, Status

FAKE_DOCKER = """#!{python}
import json, os, sys
state_file = os.environ["FAKE_DOCKER_STATE"]
state = json.load(open(state_file)) if os.path.exists(state_file) else {{"containers": {{}}}}
args = sys.argv[1:]
state.setdefault("calls", []).append(args)
containers = state["containers"]
code = 0
if args[0] == "info":
    print("27.0.0")
elif args[0] == "inspect":
    found = containers.get(args[-1])
    if found is None:
        print("Error: No such object: " + args[-1], file=sys.stderr)
        code = 1
    else:
        label = found["labels"].get("nexus.spec", "")  # what `index` gives for no label
        print(("true" if found["running"] else "false") + " " + label)
elif args[0] == "rm":
    containers.pop(args[-1], None)
elif args[0] == "run":
    name = args[args.index("--name") + 1]
    labels = dict(
        args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--label"
    )
    containers[name] = {{"running": True, "labels": labels, "argv": args}}
    print("c0ffee")
json.dump(state, open(state_file, "w"))
sys.exit(code)
"""


class _Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_ports() -> Iterator[tuple[int, int]]:
    """Two loopback servers standing in for the container's admin and ingress ports."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Healthy) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield servers[0].server_address[1], servers[1].server_address[1]
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def docker_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in `docker` first on PATH; returns the file where it keeps its state."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text(FAKE_DOCKER.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    state = tmp_path / "docker.json"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_STATE", str(state))
    return state


EnvWriter = Callable[..., Environment]


@pytest.fixture
def docker_env(tmp_path: Path, health_ports: tuple[int, int]) -> EnvWriter:
    """Write (or rewrite) a docker-runtime environment and load it."""
    ingress, admin = health_ports
    file = tmp_path / "dock.toml"

    def write(partitions: int = 2, signing: bool = False) -> Environment:
        file.write_text(
            f"""
[restate]
runtime = "docker"
ingress_url = "http://127.0.0.1:{ingress}"
admin_url = "http://127.0.0.1:{admin}"
partitions = {partitions}

[service]
mode = "url"
url = "http://127.0.0.1:1"
signing = {str(signing).lower()}

[state]
dir = "{tmp_path / "state"}"
"""
        )
        return environments.load(str(file), root=environments.PROJECT_ROOT)

    return write


def _calls(state: Path) -> list[list[str]]:
    return [call for call in json.loads(state.read_text())["calls"] if call[0] in ("run", "rm")]


def test_a_second_deploy_finds_the_container_and_changes_nothing(
    docker_state: Path, docker_env: EnvWriter
) -> None:
    runtime = DockerRuntime(docker_env())
    first = runtime.server(Context())
    assert first.status is Status.CHANGED and "started" in first.message
    assert runtime.server(Context()).status is Status.OK
    assert [call[0] for call in _calls(docker_state)] == ["rm", "run"]


def test_a_changed_setting_recreates_the_container_and_check_mode_shows_the_diff(
    docker_state: Path, docker_env: EnvWriter
) -> None:
    DockerRuntime(docker_env(partitions=2)).server(Context())
    data = docker_env().state_dir / "data"
    (data / "db").mkdir(parents=True)  # the server has provisioned its partitions
    runtime = DockerRuntime(docker_env(partitions=1))

    planned = runtime.server(Context(check=True))
    assert planned.status is Status.CHANGED and "would recreate" in planned.message
    assert "-RESTATE_DEFAULT_NUM_PARTITIONS=2" in planned.diff
    assert "+RESTATE_DEFAULT_NUM_PARTITIONS=1" in planned.diff
    assert "invoke down --purge" in planned.message
    assert len(_calls(docker_state)) == 2  # check mode ran nothing

    done = runtime.server(Context())
    assert done.status is Status.CHANGED and "recreated" in done.message
    assert [call[0] for call in _calls(docker_state)] == ["rm", "run", "rm", "run"]
    assert runtime.server(Context()).status is Status.OK


def test_a_container_from_before_the_label_is_recreated(
    docker_state: Path, docker_env: EnvWriter
) -> None:
    runtime = DockerRuntime(docker_env())
    docker_state.write_text(
        json.dumps({"containers": {runtime.container: {"running": True, "labels": {}}}})
    )
    assert "would recreate" in runtime.server(Context(check=True)).message


def test_a_stopped_container_is_recreated_and_its_old_settings_still_count(
    docker_state: Path, docker_env: EnvWriter
) -> None:
    runtime = DockerRuntime(docker_env(partitions=2))
    runtime.server(Context())
    state = json.loads(docker_state.read_text())
    state["containers"][runtime.container]["running"] = False
    docker_state.write_text(json.dumps(state))
    (runtime.env.state_dir / "data" / "db").mkdir(parents=True)

    same = runtime.server(Context(check=True))
    assert "would recreate" in same.message and "(stopped)" in same.message
    moved = DockerRuntime(docker_env(partitions=1)).server(Context(check=True))
    assert "(settings changed)" in moved.message and "invoke down --purge" in moved.message


def test_down_removes_a_stopped_container_too(docker_state: Path, docker_env: EnvWriter) -> None:
    runtime = DockerRuntime(docker_env())
    runtime.server(Context())
    state = json.loads(docker_state.read_text())
    state["containers"][runtime.container]["running"] = False
    docker_state.write_text(json.dumps(state))
    assert runtime.stop(Context()).status is Status.CHANGED
    assert runtime.stop(Context()).status is Status.OK
    assert runtime.inspect() is None


def test_signing_passes_the_private_key_into_the_container(
    docker_state: Path, docker_env: EnvWriter
) -> None:
    env = docker_env(signing=True)
    DockerRuntime(env).server(Context())
    run = _calls(docker_state)[-1]
    assert f"{env.state_dir / 'signing'}:/restate-signing:ro" in run
    variable = next(a for a in run if a.startswith("RESTATE_WORKER__INVOKER__"))
    assert variable.endswith("=/restate-signing/private.pem")
