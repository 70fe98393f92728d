"""Connect mode offline: `python -m restate connect` as the service process, one tunnel
per version (`--name NAME-<version>`), registered at the address the SDK reports after
its handshake, with the connect key only in the child's environment. (A local
restate-server refuses `connect://`, so the tunnel itself is only testable against Cloud.)"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.base import environments
from ops.base.environments import PROJECT_ROOT, Environment
from ops.base.errors import SecretMissing
from ops.base.processes import ProcessManager, ProcessSpec, free_port
from ops.base.steps import Play, Status, StepContext
from ops.release.stack import Stack, status_lines
from ops.release.versions import Instance
from ops.server.runtimes import ensure_process

KEY = "connect-key-" + "s3cr3t" * 6
NAME = "nexus-unit"


def connect_toml(state: Path, extra: str = "") -> str:
    admin, ingress, gw = free_port(), free_port(), free_port()
    return f"""
[restate]
runtime = "external"
ingress_url = "http://127.0.0.1:{ingress}"
admin_url = "http://127.0.0.1:{admin}"

[service]
mode = "connect"
url = "unused"
connect_name = "{NAME}"
hold_seconds = 30
{extra}

[gateway]
mode = "external"
url = "http://127.0.0.1:{gw}"

[state]
dir = "{state}"
"""


@pytest.fixture(autouse=True)
def clean_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RESTATE_CONNECT_KEY", "MY_CONNECT_KEY", "RESTATE_CONNECT_NAME"):
        monkeypatch.delenv(var, raising=False)


def load(
    tmp_path: Path,
    secrets: str | None = f"RESTATE_CONNECT_KEY={KEY}\n",
    extra: str = "",
    root: Path | None = None,
) -> Environment:
    """`conn.toml` with secrets in `<root>/.env.conn` (root: a fresh folder by default)."""
    if root is None:
        root = tmp_path / "root"
        (root / "environments").mkdir(parents=True, exist_ok=True)
    if secrets is not None:
        assert root.is_relative_to(tmp_path), "never write secrets outside tmp_path"
        (root / ".env.conn").write_text(secrets)
    file = tmp_path / "conn.toml"
    file.write_text(connect_toml(tmp_path / "state", extra))
    return environments.load(str(file), root=root)


def tunnel(env: Environment) -> ProcessSpec:
    """The spec of the tunnel of the version the sources would run."""
    stack = Stack(env)
    return stack.release.spec(Instance(stack.version, None))


def test_connect_mode_runs_restate_connect_with_the_key_only_in_secret_env(
    tmp_path: Path,
) -> None:
    env = load(tmp_path)
    assert env.service_mode == "connect"
    stack = Stack(env)
    spec = tunnel(env)
    assert spec.name == f"service-{stack.version}-connect"
    assert list(spec.argv) == [  # on the version's own venv, never the toolkit's Python
        str(env.state_dir / "versions" / stack.version / "venv" / "bin" / "python"),
        "-m",
        "restate",
        "connect",
        "service.app:app",
        "--name",
        f"{NAME}-{stack.version}",
    ]
    assert list(spec.ports) == []
    assert spec.cwd == stack.release.versions_dir / stack.version  # its own snapshot
    assert spec.stop_timeout >= 120  # the SDK drains a tunnel for up to 120 s
    assert dict(spec.secret_env) == {"RESTATE_CONNECT_KEY": KEY}
    assert all(KEY not in arg for arg in spec.argv)
    assert all(KEY not in f"{k}={v}" for k, v in spec.env.items())
    assert KEY not in repr(spec)
    assert KEY not in spec.fingerprint()
    # The service still gets its settings in the plain environment.
    assert spec.env["NEXUS_GATEWAY_URL"] == env.gateway.url
    assert spec.env["NEXUS_HOLD_SECONDS"] == "30"


def test_connect_registers_the_address_the_sdk_reports(tmp_path: Path) -> None:
    env = load(tmp_path)
    stack = Stack(env)
    instance = Instance(stack.version, None)
    spec = tunnel(env)
    assert not spec.ready()  # no handshake reported yet
    log = stack.procs.log_file(instance.name)
    log.parent.mkdir(parents=True)
    log.write_text(
        "\n--- start 2026-11-30 ---\nConnected to Restate Cloud as x. Register this"
        " deployment as connect://reported-by-sdk\n"
    )
    assert spec.ready()
    assert stack.release.uri(instance) == "connect://reported-by-sdk"
    # A later start without a handshake yet: the old address does not count.
    log.write_text(log.read_text() + "\n--- start 2026-11-30 ---\nstarting\n")
    assert not spec.ready()


def test_process_environment_wins_over_the_env_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESTATE_CONNECT_KEY", "from-process-env")
    env = load(tmp_path)
    assert dict(tunnel(env).secret_env) == {"RESTATE_CONNECT_KEY": "from-process-env"}


def test_connect_key_env_names_another_variable(tmp_path: Path) -> None:
    env = load(
        tmp_path, secrets=f"MY_CONNECT_KEY={KEY}\n", extra='connect_key_env = "MY_CONNECT_KEY"'
    )
    spec = tunnel(env)
    # The SDK reads RESTATE_CONNECT_KEY, whatever the file calls the variable.
    assert dict(spec.secret_env) == {"RESTATE_CONNECT_KEY": KEY}


@pytest.mark.parametrize(
    ("secrets", "extra", "variable"),
    [
        (None, "", "RESTATE_CONNECT_KEY"),
        ("RESTATE_CONNECT_KEY=\n", "", "RESTATE_CONNECT_KEY"),  # empty counts as missing
        (f"RESTATE_CONNECT_KEY={KEY}\n", 'connect_key_env = "MY_CONNECT_KEY"', "MY_CONNECT_KEY"),
    ],
)
def test_missing_connect_key_names_the_variable(
    tmp_path: Path, secrets: str | None, extra: str, variable: str
) -> None:
    env = load(tmp_path, secrets=secrets, extra=extra)  # loading needs no secret
    with pytest.raises(SecretMissing, match=variable) as missing:
        tunnel(env)
    assert "connect" in str(missing.value)
    assert str(env.root / ".env.conn") in str(missing.value)


def test_service_step_reports_the_missing_key_as_a_failure(tmp_path: Path) -> None:
    env = load(tmp_path, secrets=None)
    service = dict(Stack(env).deploy_steps())["service"]
    out = io.StringIO()
    play = Play("deploy conn", StepContext(check=True), out=out)
    result = play.run("service", service)
    assert result.status is Status.FAILED
    assert "RESTATE_CONNECT_KEY" in result.message and "RESTATE_CONNECT_KEY" in out.getvalue()


def test_check_mode_would_start_the_tunnel_and_shows_no_key(tmp_path: Path) -> None:
    env = load(tmp_path)
    service = dict(Stack(env).deploy_steps())["service"]
    out = io.StringIO()
    result = Play("deploy conn", StepContext(check=True, show_diff=True), out=out).run(
        "service", service
    )
    assert result.status is Status.CHANGED
    assert "would start version" in result.message
    assert f"{tunnel(env).name}: stopped → running" in out.getvalue()
    assert KEY not in out.getvalue()
    assert not (env.state_dir / "run").exists()


def test_connect_mode_does_not_need_a_service_url_check(tmp_path: Path) -> None:
    env = load(tmp_path)
    assert env.settings.service.url == "unused"  # not validated as a URL in connect mode


@pytest.fixture
def sleeper() -> Iterator[int]:
    """A Python child that stands in for a long-running `python -m restate connect`."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        yield child.pid
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)


def test_running_connect_tunnel_is_ok_on_the_next_deploy(tmp_path: Path, sleeper: int) -> None:
    env = load(tmp_path)
    spec = tunnel(env)
    procs = ProcessManager(env.state_dir)
    procs.run_dir.mkdir(parents=True)
    # The PID file deploy would have written when it started the tunnel a while ago.
    record = {
        "pid": sleeper,
        "fingerprint": spec.fingerprint(),
        "command": spec.argv[0],
        "stop_timeout": 3.0,
    }
    procs.pid_file(spec.name).write_text(json.dumps(record))
    procs.log_dir.mkdir(parents=True)
    procs.log_file(spec.name).write_text(
        "\n--- start ---\nConnected. Register this deployment as connect://x\n"
    )
    assert procs.info(spec.name).alive
    # Check mode: reports, never stops or starts anything.
    result = ensure_process(procs, tunnel(env), StepContext(check=True))
    assert result.status is Status.OK, result.message


def test_status_works_without_the_connect_key(tmp_path: Path) -> None:
    env = load(tmp_path, secrets=None, root=PROJECT_ROOT)  # status reads the project's sources
    assert env.secret("RESTATE_CONNECT_KEY") is None
    lines = status_lines(env)
    assert any("server" in line for line in lines)


def test_new_service_code_changes_the_tunnel_fingerprint(tmp_path: Path) -> None:
    env = load(tmp_path)
    code = env.root / "service" / "app.py"
    code.parent.mkdir()
    code.write_text("VERSION = 1\n")
    before = tunnel(env).fingerprint()
    code.write_text("VERSION = 2\n")
    assert tunnel(env).fingerprint() != before


# --- the shipped environments/cloud.toml --------------------------------------------------


def _shipped_cloud(tmp_path: Path, text: str) -> Environment:
    root = tmp_path / "root"
    (root / "environments").mkdir(parents=True)
    (root / "environments" / "cloud.toml").write_text(text)
    return environments.load("cloud", root=root)


def test_shipped_cloud_file_loads_with_placeholder_urls(tmp_path: Path) -> None:
    env = _shipped_cloud(tmp_path, (PROJECT_ROOT / "environments" / "cloud.toml").read_text())
    assert env.runtime == "external"
    assert env.settings.restate.token_env == "RESTATE_AUTH_TOKEN"
    assert env.ingress.url == "https://YOUR-ENV-ID.env.eu.restate.cloud:8080"
    assert (env.admin.host, env.admin.port) == ("your-env-id.env.eu.restate.cloud", 9070)
    assert env.service_mode == "url" and env.service.url.startswith("https://")
    assert env.gateway_mode == "external" and env.gateway.url.startswith("https://")
    stack = Stack(env)
    assert "{version}" in env.settings.service.url  # each version at a URL of its own
    assert stack.release.url == f"https://nexus-{stack.version}.example.com"
    with pytest.raises(SecretMissing, match="RESTATE_AUTH_TOKEN"):
        _ = env.token


def test_shipped_cloud_file_connect_alternative_loads(tmp_path: Path) -> None:
    """The commented connect block, swapped in as its comment says, is a valid file."""
    lines = (PROJECT_ROOT / "environments" / "cloud.toml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('#   mode = "connect"'))
    block = []
    for line in lines[start:]:
        if not line.startswith("#   "):
            break
        block.append(line[4:])
    kept = [line for line in lines if not line.startswith(('mode = "url"', "url = "))]
    at = kept.index("[service]") + 1
    env = _shipped_cloud(tmp_path, "\n".join([*kept[:at], *block, *kept[at:]]) + "\n")
    assert env.service_mode == "connect"
    assert env.settings.service.connect_key_env == "RESTATE_CONNECT_KEY"
    stack = Stack(env)
    assert stack.release.uri(Instance(stack.version, None)) == f"connect://nexus-{stack.version}"
