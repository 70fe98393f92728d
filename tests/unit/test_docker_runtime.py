"""The Docker runtime's command lines and convergence, against a stand-in `docker` client
on PATH (the real engine is exercised in tests/integration/test_docker.py). The stand-in
keeps its containers in a JSON file; two loopback HTTP servers answer the health checks
a started container would."""

from __future__ import annotations

import io
import json
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from ops.base import environments
from ops.base.environments import Environment
from ops.base.errors import ConfigError, NexusError, RuntimeUnavailable
from ops.base.processes import free_port
from ops.base.steps import Status, StepContext
from ops.release.stack import down
from ops.server.docker_runtime import DockerRuntime, bind_ip, container_name

FAKE_DOCKER = """#!{python}
import json, os, sys
state_file = os.environ["FAKE_DOCKER_STATE"]
state = json.load(open(state_file)) if os.path.exists(state_file) else {{"containers": {{}}}}
args = sys.argv[1:]
state.setdefault("calls", []).append(args)
containers = state["containers"]
fail = os.environ.get("FAKE_DOCKER_FAIL", "")
code = 0
if args[0] in fail.split(","):
    print("Error response from daemon: " + args[0] + " refused", file=sys.stderr)
    code = 1
elif args[0] == "version":
    print("27.0.0")
elif args[0] == "inspect":
    found = containers.get(args[-1])
    if found is None:
        print("Error: No such object: " + args[-1], file=sys.stderr)
        code = 1
    else:
        label = found["labels"].get("nexus.spec", "")  # what `index` gives for no label
        print(found["status"] + " " + str(found["code"]) + " 2024-01-01T00:00:00Z img " + label)
elif args[0] in ("stop", "kill"):
    if args[-1] in containers:
        containers[args[-1]].update(status="exited", code=137 if args[0] == "kill" else 0)
    else:
        print("Error: No such container: " + args[-1], file=sys.stderr)
        code = 1
elif args[0] == "rm":
    containers.pop(args[-1], None)
elif args[0] == "logs":
    print("line 1\\nError: [RT0002] data from node 'abc'", file=sys.stderr)
elif args[0] == "run":
    name = args[args.index("--name") + 1]
    labels = dict(
        args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--label"
    )
    status = os.environ.get("FAKE_DOCKER_RUN_STATUS", "running")
    containers[name] = {{"status": status, "code": 1 if status == "exited" else 0,
                        "labels": labels, "argv": args}}
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
    # The stand-in health servers hold the ports a real container would bind.
    monkeypatch.setattr("ops.server.docker_runtime.port_free", lambda host, port: True)
    return state


EnvWriter = Callable[..., Environment]


@pytest.fixture
def docker_env(tmp_path: Path, health_ports: tuple[int, int]) -> EnvWriter:
    """Write (or rewrite) a docker-runtime environment and load it."""
    ingress, admin = health_ports
    file = tmp_path / "dock.toml"

    def write(
        partitions: int = 2, signing: bool = False, host: str = "127.0.0.1", ports: bool = True
    ) -> Environment:
        ingress_port, admin_port = (ingress, admin) if ports else (free_port(), free_port())
        file.write_text(
            f"""
[restate]
runtime = "docker"
ingress_url = "http://{host}:{ingress_port}"
admin_url = "http://{host}:{admin_port}"
node_port = 5999
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
    return [
        call
        for call in json.loads(state.read_text())["calls"]
        if call[0] in ("run", "rm", "stop", "kill")
    ]


def test_a_second_deploy_finds_the_container_and_changes_nothing(
    docker_state: Path, docker_env: EnvWriter
) -> None:
    runtime = DockerRuntime(docker_env())
    first = runtime.server(StepContext())
    assert first.status is Status.CHANGED and "started" in first.message
    assert runtime.server(StepContext()).status is Status.OK
    assert [call[0] for call in _calls(docker_state)] == ["run"]


def test_a_changed_setting_recreates_the_container_and_check_mode_shows_the_diff(
    docker_state: Path, docker_env: EnvWriter
) -> None:
    DockerRuntime(docker_env(partitions=2)).server(StepContext())
    data = docker_env().state_dir / "data"
    (data / "db").mkdir(parents=True)  # the server has provisioned its partitions
    runtime = DockerRuntime(docker_env(partitions=1))

    planned = runtime.server(StepContext(check=True))
    assert planned.status is Status.CHANGED and "would recreate" in planned.message
    assert "-RESTATE_DEFAULT_NUM_PARTITIONS=2" in planned.diff
    assert "+RESTATE_DEFAULT_NUM_PARTITIONS=1" in planned.diff
    assert "invoke down --purge" in planned.message
    assert len(_calls(docker_state)) == 1  # check mode ran nothing

    done = runtime.server(StepContext())
    assert done.status is Status.CHANGED and "recreated" in done.message
    assert [call[0] for call in _calls(docker_state)] == ["run", "stop", "rm", "run"]
    stop = _calls(docker_state)[1]
    assert stop == ["stop", "--time", "10", runtime.container]  # graceful first
    assert runtime.server(StepContext()).status is Status.OK


def test_a_container_from_before_the_label_is_recreated(
    docker_state: Path, docker_env: EnvWriter
) -> None:
    runtime = DockerRuntime(docker_env())
    docker_state.write_text(
        json.dumps(
            {"containers": {runtime.container: {"status": "running", "code": 0, "labels": {}}}}
        )
    )
    assert "would recreate" in runtime.server(StepContext(check=True)).message


def test_a_stopped_container_is_recreated_and_its_old_settings_still_count(
    docker_state: Path, docker_env: EnvWriter
) -> None:
    runtime = DockerRuntime(docker_env(partitions=2))
    runtime.server(StepContext())
    state = json.loads(docker_state.read_text())
    state["containers"][runtime.container]["status"] = "exited"
    docker_state.write_text(json.dumps(state))
    (runtime.env.state_dir / "data" / "db").mkdir(parents=True)

    same = runtime.server(StepContext(check=True))
    assert "would recreate" in same.message and "(exited)" in same.message
    moved = DockerRuntime(docker_env(partitions=1)).server(StepContext(check=True))
    assert "(settings changed)" in moved.message and "invoke down --purge" in moved.message


def test_down_removes_a_stopped_container_too(docker_state: Path, docker_env: EnvWriter) -> None:
    runtime = DockerRuntime(docker_env())
    runtime.server(StepContext())
    state = json.loads(docker_state.read_text())
    state["containers"][runtime.container]["status"] = "exited"
    docker_state.write_text(json.dumps(state))
    assert runtime.stop(StepContext()).status is Status.CHANGED
    assert runtime.stop(StepContext()).status is Status.OK
    assert runtime.inspect() is None


def test_signing_passes_the_private_key_into_the_container(
    docker_state: Path, docker_env: EnvWriter
) -> None:
    env = docker_env(signing=True)
    DockerRuntime(env).server(StepContext())
    run = _calls(docker_state)[-1]
    assert f"{env.state_dir / 'signing'}:/restate-signing:ro" in run
    variable = next(a for a in run if a.startswith("RESTATE_WORKER__INVOKER__"))
    assert variable.endswith("=/restate-signing/private.pem")


def _variables(spec: list[str]) -> dict[str, str]:
    return dict(spec[i + 1].split("=", 1) for i, a in enumerate(spec) if a == "--env")


def test_the_container_shares_the_host_network_and_binds_the_environments_addresses(
    docker_state: Path, docker_env: EnvWriter
) -> None:
    env = docker_env()
    spec = DockerRuntime(env).spec()
    assert spec[:2] == ["--network", "host"] and "--publish" not in spec
    assert spec[-1] == env.settings.restate.image
    variables = _variables(spec)
    assert variables["RESTATE_INGRESS__BIND_ADDRESS"] == env.ingress.bind
    assert variables["RESTATE_ADMIN__BIND_ADDRESS"] == env.admin.bind
    assert variables["RESTATE_BIND_ADDRESS"] == "127.0.0.1:5999"
    # The node name is fixed, so a new container accepts the old container's data.
    assert variables["RESTATE_NODE_NAME"] == f"nexus-{env.name}"
    assert f"{env.state_dir / 'data'}:/restate-data" in spec
    assert spec[spec.index("--user") + 1] == f"{os.getuid()}:{os.getgid()}"


def test_localhost_in_the_urls_is_bound_as_127_0_0_1(
    docker_state: Path, docker_env: EnvWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = docker_env(host="localhost")
    variables = _variables(DockerRuntime(env).spec())
    assert variables["RESTATE_INGRESS__BIND_ADDRESS"] == f"127.0.0.1:{env.ingress.port}"
    assert variables["RESTATE_ADMIN__BIND_ADDRESS"] == f"127.0.0.1:{env.admin.port}"
    assert bind_ip("::1") == "::1"

    def unresolvable(*args: object) -> None:
        raise OSError("Name or service not known")

    monkeypatch.setattr(
        "ops.server.docker_runtime.socket.getaddrinfo", unresolvable
    )  # no DNS query
    with pytest.raises(ConfigError, match=r"cannot resolve 'ingress\.example'"):
        bind_ip("ingress.example")


def test_the_container_name_differs_per_state_folder(tmp_path: Path) -> None:
    base = environments.load("docker")
    other = environments.Environment(
        name=base.name,
        file=base.file,
        root=tmp_path,  # another checkout: same environment name, another state folder
        settings=base.settings,
    )
    first, second = container_name(base), container_name(other)
    assert first.startswith("nexus-restate-docker-") and second.startswith("nexus-restate-docker-")
    assert first != second and container_name(base) == first


def test_the_engine_check_asks_docker_version_for_the_server_version(
    docker_state: Path, docker_env: EnvWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = DockerRuntime(docker_env())
    assert runtime.engine_check() == "27.0.0"
    calls = json.loads(docker_state.read_text())["calls"]
    assert ["version", "--format", "{{.Server.Version}}"] in calls
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "version")
    with pytest.raises(RuntimeUnavailable, match="no Docker engine answers"):
        runtime.server(StepContext())


def test_a_container_that_exits_at_once_is_reported_with_its_log(
    docker_state: Path, docker_env: EnvWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = DockerRuntime(docker_env(ports=False))  # nothing answers health checks
    monkeypatch.setenv("FAKE_DOCKER_RUN_STATUS", "exited")
    started = time.monotonic()
    with pytest.raises(NexusError) as failure:
        runtime.server(StepContext())
    assert time.monotonic() - started < 5
    assert "exited with code 1" in failure.value.message
    assert "[RT0002] data from node 'abc'" in failure.value.message
    assert ["logs", "--tail", "20", runtime.container] in json.loads(docker_state.read_text())[
        "calls"
    ]


def test_a_failed_stop_is_reported_and_the_container_kept(
    docker_state: Path, docker_env: EnvWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = DockerRuntime(docker_env())
    runtime.server(StepContext())
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "stop")
    with pytest.raises(NexusError, match=f"docker stop {runtime.container} failed: .*refused"):
        runtime.stop(StepContext())
    assert runtime.running()
    assert "rm" not in [call[0] for call in _calls(docker_state)]


def test_down_purge_without_an_engine_still_purges(
    docker_state: Path, docker_env: EnvWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = docker_env()
    (env.state_dir / "data" / "db").mkdir(parents=True)
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "version")
    out = io.StringIO()
    play = down(env, purge=True, out=out)
    assert not play.failed, out.getvalue()
    assert "no Docker engine answers" in out.getvalue()
    assert not env.state_dir.exists()


def test_status_lines_show_the_container(
    docker_state: Path, docker_env: EnvWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = DockerRuntime(docker_env())
    assert runtime.status_lines() == ["container", f"  {runtime.container}  absent (Docker 27.0.0)"]
    runtime.server(StepContext())
    line = runtime.status_lines()[1]
    assert line.startswith(f"  {runtime.container}  running  image img")
    assert "settings differ" not in line
    runtime.kill()
    assert "exited (exit code 137)" in runtime.status_lines()[1]
    monkeypatch.setenv("FAKE_DOCKER_FAIL", "version")
    assert "no Docker engine answers" in runtime.status_lines()[1]
