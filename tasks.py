"""Nexus tasks: `invoke --list` shows them all; those that act on a stack take `--env NAME`."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invoke import Context, Exit, task

import ops.audit
import ops.chaos
import ops.load
import ops.stack
import ops.steps
from ops import environments, scenarios
from ops.build import Build
from ops.environments import PROJECT_ROOT
from ops.errors import NexusError

ENV_HELP = "environment name under environments/ (or a path to a .toml file); default: local"


@contextmanager
def _errors() -> Iterator[None]:
    """Expected failures end a task with their message and exit code 2, not a traceback."""
    try:
        yield
    except NexusError as exc:
        raise Exit(f"error: {exc}", code=2) from None


def _milliseconds(option: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise Exit(f"error: {option} takes milliseconds, not {text!r}", code=2) from None


def _env(name: str) -> environments.Environment:
    with _errors():
        return environments.load(name)


@task(
    help={
        "env": ENV_HELP,
        "check": "show what would change, change nothing",
        "diff": "show before/after of each change",
    }
)
def deploy(c: Context, env: str = "local", check: bool = False, diff: bool = False) -> None:
    """Converge the environment: server, gateway, service, registration, smoke call."""
    with _errors():
        play = ops.stack.deploy(_env(env), check=check, diff=diff)
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
    with _errors():
        play = ops.stack.down(_env(env), purge=purge, check=check)
    if play.failed:
        raise Exit(code=1)


@task(help={"env": ENV_HELP})
def status(c: Context, env: str = "local") -> None:
    """Server health, deployments, services and handlers, processes with PIDs and ports."""
    with _errors():
        print("\n".join(ops.stack.status_lines(_env(env))))


@task(
    name="test-all",
    help={"env": ENV_HELP, "junit": "also write the results as JUnit XML to this file"},
)
def test_all(c: Context, env: str = "local", junit: str = "") -> None:
    """Run the contract scenarios through the environment's ingress (with its token)."""
    with _errors():
        outcomes = scenarios.test_all(_env(env), junit=Path(junit) if junit else None)
    if any(o.status == "failed" for o in outcomes):
        raise Exit(code=1)


@task(
    help={
        "env": ENV_HELP,
        "vus": "virtual users (default 10)",
        "duration": "hold duration, k6 format (default 30s)",
        "script": "checkout (default), hot-seat, or a path to a .js file",
        "seats": "seats to pick from at random (default 100)",
        "ramp": "ramp-up and ramp-down time (default 2s)",
        "out": "write the JSON summary (with the audit) to this file",
        "report": "write k6's HTML dashboard report to this file",
        "mix": "payment methods: default (80% success, 10% decline, 10% error) or success",
        "gateway_latency": "mock gateway: answer each charge after this many ms during the run",
    }
)
def load(
    c: Context,
    env: str = "local",
    vus: int = 10,
    duration: str = "30s",
    script: str = "checkout",
    seats: int = 100,
    ramp: str = "2s",
    out: str = "",
    report: str = "",
    mix: str = "default",
    gateway_latency: str = "",
) -> None:
    """Run a k6 load through the environment's ingress, then audit what it booked."""
    environment = _env(env)
    latency = _milliseconds("--gateway-latency", gateway_latency) if gateway_latency else None
    with _errors(), ops.load.gateway_latency(environment, latency):
        run = ops.load.drive(
            environment,
            vus=vus,
            duration=duration,
            script=script,
            seats=seats,
            ramp=ramp,
            mix=mix,
            report_html=Path(report) if report else None,
        )
        result = ops.load.audit_run(environment, run)
    ops.load.print_result(result)
    if out:
        ops.load.write_json(result.to_dict(), Path(out))
    if not result.ok:
        code = 130 if result.summary.interrupted else 1  # 130: the shell's code for Ctrl-C
        raise Exit(f"load failed: {'; '.join(result.problems())}", code=code)


@task(help={"env": ENV_HELP, "prefix": "only seats whose id starts with this"})
def audit(c: Context, env: str = "local", prefix: str = "") -> None:
    """Check the booking invariants in Restate's state and the gateway's charges."""
    with _errors():
        report = ops.audit.audit(_env(env), prefix=prefix)
    print("\n".join(report.lines()))
    if not report.ok:
        raise Exit(code=1)


@task(
    help={
        "env": ENV_HELP,
        "vus": "virtual users in both phases (default 32)",
        "duration": "length of each phase (default 20s)",
        "out": "write the figures as JSON to this file",
    }
)
def bench(
    c: Context, env: str = "local", vus: int = 32, duration: str = "20s", out: str = ""
) -> None:
    """Measure no-op calls vs. full checkouts on this machine: rate, ratio, latency, CPU."""
    with _errors():
        result = ops.load.bench(_env(env), vus=vus, duration=duration)
    print("\n".join(ops.load.bench_lines(result)))
    if out:
        ops.load.write_json(result, Path(out))
    if not result["ok"]:
        raise Exit("bench figures not valid: a phase had unexpected answers or a bad audit", 1)


@task(
    help={
        "env": ENV_HELP,
        "scenario": "one scenario or a comma-separated list (default: all): "
        + ", ".join(ops.chaos.SCENARIOS),
    }
)
def chaos(c: Context, env: str = "local", scenario: str = "") -> None:
    """Inject faults (kills, gateway outage, hot seat, bad input, ...) and check recovery."""
    with _errors():
        outcomes = ops.chaos.run_chaos(_env(env), scenario or None)
    if any(o.status == "failed" for o in outcomes):
        raise Exit(code=1)


@task(help={"check": "show what would be built, build nothing"})
def build(c: Context, check: bool = False) -> None:
    """Build a wheel into dist/ and a container context (Dockerfile) for the service."""
    play = ops.steps.Play("build", ops.steps.Context(check=check))
    with _errors():
        for name, step in Build(PROJECT_ROOT).steps():
            play.run(name, step)
    play.recap()
    if play.failed:
        raise Exit(code=1)


@task(help={"k": "only tests matching this pytest -k expression", "args": "extra pytest arguments"})
def test(c: Context, k: str = "", args: str = "") -> None:
    """Run the whole pytest suite (unit and integration, against a real restate-server)."""
    select = f" -k {shlex.quote(k)}" if k else ""
    c.run(f"{sys.executable} -m pytest{select} {args}", pty=False)
