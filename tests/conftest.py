"""Shared fixtures: throwaway environments on free loopback ports, and one deployed
stack (real restate-server, service and mock gateway) for the integration tests."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ops.base import environments
from ops.base.environments import PROJECT_ROOT, Environment
from ops.base.processes import free_port
from ops.release.stack import Stack, deploy, down

EnvFactory = Callable[..., Environment]


def run_invoke(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m invoke ARGS` from the project root, as a user types it; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "invoke", *args],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def env_toml(
    state_dir: Path, *, hold_seconds: float = 900, extra: str = "", **sections: str
) -> str:
    """An environment file with every port free right now and state under `state_dir`."""
    ingress, admin, node, svc, gw = (free_port() for _ in range(5))
    return f"""
[restate]
runtime = "binary"
ingress_url = "http://127.0.0.1:{ingress}"
admin_url = "http://127.0.0.1:{admin}"
node_port = {node}
partitions = 2
{sections.get("restate", "")}

[service]
mode = "process"
url = "http://127.0.0.1:{svc}"
hold_seconds = {hold_seconds}
{sections.get("service", "")}

[gateway]
mode = "mock"
url = "http://127.0.0.1:{gw}"

[state]
dir = "{state_dir}"
{extra}
"""


@pytest.fixture
def make_env(tmp_path: Path) -> EnvFactory:
    """Write a fresh environment file; the npm install under the project is shared."""

    def factory(name: str = "itest", **kwargs: object) -> Environment:
        file = tmp_path / f"{name}.toml"
        file.write_text(env_toml(tmp_path / f"state-{name}", **kwargs))  # type: ignore[arg-type]
        return environments.load(str(file), root=PROJECT_ROOT)

    return factory


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """One deployed stack for the contract tests, with a short hold (5 s)."""
    base = tmp_path_factory.mktemp("stack")
    file = base / "contract.toml"
    file.write_text(env_toml(base / "state", hold_seconds=5))
    env = environments.load(str(file), root=PROJECT_ROOT)
    out = io.StringIO()
    play = deploy(env, out=out)
    if play.failed:
        down(env, out=io.StringIO())
        pytest.fail("deploy of the test stack failed:\n" + out.getvalue())
    yield Stack(env)
    down(env, purge=True, out=io.StringIO())
