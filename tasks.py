"""Nexus tasks: `invoke --list` shows them all; those that act on a stack take `--env NAME`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from invoke import Context, Exit, task

from ops import environments, scenarios
from ops.errors import NexusError
from ops.stack import deploy as deploy_play
from ops.stack import down as down_play
from ops.stack import status_lines

ENV_HELP = "environment name under environments/ (or a path to a .toml file); default: local"


def _env(name: str) -> environments.Environment:
    try:
        return environments.load(name)
    except NexusError as exc:
        raise Exit(f"error: {exc}", code=2) from None


@task(
    help={
        "env": ENV_HELP,
        "check": "show what would change, change nothing",
        "diff": "show before/after of each change",
    }
)
def deploy(c: Context, env: str = "local", check: bool = False, diff: bool = False) -> None:
    """Converge the environment: server, gateway, service, registration, smoke call."""
    play = deploy_play(_env(env), check=check, diff=diff)
    if play.failed:
        raise Exit(code=1)


@task(
    help={
        "env": ENV_HELP,
        "purge": "also delete data, logs and outbox",
        "check": "show what would stop",
    }
)
def down(c: Context, env: str = "local", purge: bool = False, check: bool = False) -> None:
    """Stop everything deploy started (no process left behind)."""
    play = down_play(_env(env), purge=purge, check=check)
    if play.failed:
        raise Exit(code=1)


@task(help={"env": ENV_HELP})
def status(c: Context, env: str = "local") -> None:
    """Server health, deployments, services and handlers, processes with PIDs and ports."""
    print("\n".join(status_lines(_env(env))))


@task(
    name="test-all",
    help={"env": ENV_HELP, "junit": "also write the results as JUnit XML to this file"},
)
def test_all(c: Context, env: str = "local", junit: str = "") -> None:
    """Run the contract scenarios through the environment's ingress (with its token)."""
    outcomes = scenarios.test_all(_env(env), junit=Path(junit) if junit else None)
    if any(o.status == "failed" for o in outcomes):
        raise Exit(code=1)


@task(help={"k": "only tests matching this pytest -k expression", "args": "extra pytest arguments"})
def test(c: Context, k: str = "", args: str = "") -> None:
    """Run the whole pytest suite (unit and integration, against a real restate-server)."""
    select = f" -k {shlex.quote(k)}" if k else ""
    c.run(f"{sys.executable} -m pytest{select} {args}", pty=False)
