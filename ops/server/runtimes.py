"""Where restate-server comes from: the npm binary (default) or nothing (`external`: a
hosted server or Restate Cloud the toolkit only talks to); the Docker runtime is in
`ops.server.docker_runtime`. Also what every runtime shares: a managed process kept
running (`ensure_process`), stopped (`stop_step`) and waited for (`wait_until`)."""

from __future__ import annotations

import difflib
import platform
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from ops.base.environments import Environment
from ops.base.errors import NexusError, RuntimeUnavailable
from ops.base.processes import (
    ProcessManager,
    ProcessSpec,
    group_alive,
    http_ready,
    poll_until,
)
from ops.base.steps import Result, StepContext, StepFn
from ops.server.server_config import server_config

Probe = Callable[[], bool]

SERVER = "restate-server"
READY_GRACE_S = 5.0  # how long a running process may take to answer its probe


class ServerRuntime(Protocol):
    """One way of running (or not running) the Restate server."""

    def deploy_steps(self) -> list[tuple[str, StepFn]]: ...

    def down_steps(self, purge: bool) -> list[tuple[str, StepFn]]: ...

    def processes(self) -> list[str]: ...


# The count as the binary's config file and the Docker container's spec spell it.
_PARTITIONS = re.compile(
    r"^(?:default-num-partitions = |RESTATE_DEFAULT_NUM_PARTITIONS=)(\d+)$", re.MULTILINE
)


def partitions_note(before: str, after: str, data_dir: Path) -> str:
    """A warning when a config change moves the partition count of a server that already
    has data: Restate fixes the count when it first provisions, so it needs a purge."""
    old, new = _PARTITIONS.search(before), _PARTITIONS.search(after)
    if old is None or new is None or old[1] == new[1]:
        return ""
    if not data_dir.is_dir() or not any(data_dir.iterdir()):
        return ""
    return (
        f"partitions {old[1]} → {new[1]} applies only to fresh state: `invoke down --purge` first"
    )


def npm_install(prefix: Path, package: str, expect: Path) -> None:
    """`npm install` one pinned package into a project folder (never globally)."""
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeUnavailable(f"npm (Node.js) must be on PATH to install {package}")
    prefix.mkdir(parents=True, exist_ok=True)
    cmd = [
        npm,
        "install",
        "--prefix",
        str(prefix),
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
        package,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        raise RuntimeUnavailable(f"npm install {package} took more than 10 minutes") from None
    if proc.returncode != 0 or not expect.is_file():
        raise RuntimeUnavailable(f"npm could not install {package}:\n{proc.stderr[-2000:]}")


def unified(before: str, after: str, name: str) -> list[str]:
    """A unified diff of two texts, as lines."""
    return list(
        difflib.unified_diff(
            before.splitlines(),
            after.splitlines(),
            f"{name} (before)",
            f"{name} (after)",
            lineterm="",
        )
    )


class BinaryRuntime:
    """restate-server from the pinned npm package, run as a managed process."""

    def __init__(self, env: Environment, procs: ProcessManager) -> None:
        self.env = env
        self.procs = procs
        self.config_file = env.state_dir / "restate.toml"

    @property
    def binary(self) -> Path:
        arch = {"x86_64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(
            platform.machine(), "x64"
        )
        pkg = f"restate-server-{platform.system().lower()}-{arch}"
        return self.env.npm_dir / "node_modules" / "@restatedev" / pkg / "bin" / "restate-server"

    def processes(self) -> list[str]:
        return [SERVER]

    def deploy_steps(self) -> list[tuple[str, StepFn]]:
        return [("install", self.install), ("server", self.server)]

    def down_steps(self, purge: bool) -> list[tuple[str, StepFn]]:
        return [("server", stop_step(self.procs, SERVER))]

    def install(self, ctx: StepContext) -> Result:
        """The pinned npm package, installed into a git-ignored project folder."""
        version = self.env.settings.restate.version
        if self.binary.is_file():
            return Result.ok(f"restate-server {version} present in {self.env.npm_dir}")
        if ctx.check:
            return Result.changed(f"would install @restatedev/restate-server@{version} with npm")
        npm_install(self.env.npm_dir, f"@restatedev/restate-server@{version}", self.binary)
        return Result.changed(
            f"installed @restatedev/restate-server@{version} into {self.env.npm_dir}"
        )

    def spec(self) -> ProcessSpec:
        env = self.env
        return ProcessSpec(
            name=SERVER,
            argv=[str(self.binary), "--config-file", str(self.config_file), "--no-logo"],
            cwd=env.state_dir,
            ports=[
                (env.ingress.host, env.ingress.port),
                (env.admin.host, env.admin.port),
                (env.ingress.host, env.settings.restate.node_port),
            ],
            ready=_all(
                http_ready(f"{env.admin.url}/health"),
                http_ready(f"{env.ingress.url}/restate/health"),
            ),
            env={"RUST_BACKTRACE": "1"},
            inputs=server_config(env),
            ready_timeout=90.0,
        )

    def server(self, ctx: StepContext) -> Result:
        """Config written, process running with it, admin and ingress healthy."""
        wanted = server_config(self.env)
        current = self.config_file.read_text() if self.config_file.is_file() else ""
        diff = unified(current, wanted, str(self.config_file)) if current != wanted else []
        note = partitions_note(current, wanted, self.env.state_dir / "data")
        result = ensure_process(
            self.procs, self.spec(), ctx, diff=diff, before_start=lambda: self._write(wanted)
        )
        return replace(result, message=f"{result.message}; {note}") if note else result

    def _write(self, config: str) -> None:
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        (self.env.state_dir / "data").mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(config)


class ExternalRuntime:
    """A server the toolkit does not manage: only checks that its admin API answers."""

    def __init__(self, env: Environment) -> None:
        self.env = env

    def processes(self) -> list[str]:
        return []

    def deploy_steps(self) -> list[tuple[str, StepFn]]:
        return [("server", self.server)]

    def down_steps(self, purge: bool) -> list[tuple[str, StepFn]]:
        return [
            (
                "server",
                lambda ctx: Result.skipped(
                    f"external server at {self.env.admin.url} is not managed"
                ),
            )
        ]

    def server(self, ctx: StepContext) -> Result:
        from ops.clients.admin import AdminClient

        admin = AdminClient(self.env.admin.url, self.env.token)
        try:
            version = admin.version().get("version", "?")
        finally:
            admin.close()
        return Result.ok(f"external restate-server {version} answers at {self.env.admin.url}")


def ensure_process(
    procs: ProcessManager,
    spec: ProcessSpec,
    ctx: StepContext,
    *,
    diff: list[str] | None = None,
    before_start: Callable[[], None] | None = None,
) -> Result:
    """Running with the wanted fingerprint → ok; otherwise (re)start → changed.

    A process that runs as wanted but does not answer its probe gets `READY_GRACE_S` to
    answer before it counts as hung: under load one probe can time out, and restarting a
    busy gateway or service would drop the work in flight on it."""
    info = procs.info(spec.name)
    wanted = spec.fingerprint()
    if info.alive and info.fingerprint == wanted and not diff:
        if poll_until(spec.ready, READY_GRACE_S, 0.5):
            return Result.ok(f"{spec.name} running (pid {info.pid})")
        if ctx.check:
            return Result.changed(f"would restart {spec.name} (pid {info.pid} is not answering)")
    lines = list(diff or [])
    if info.alive:
        verb = "restart"
        lines = lines or [
            f"{spec.name}: configuration changed (fingerprint {info.fingerprint} → {wanted})"
        ]
    else:
        verb = "start"
        lines.append(f"{spec.name}: stopped → running")
    if ctx.check:
        return Result.changed(f"would {verb} {spec.name}", lines)
    if info.alive:
        procs.stop(spec.name)
    if before_start is not None:
        before_start()
    pid = procs.start(spec)
    ports = ", ".join(f"{h}:{p}" for h, p in spec.ports)
    return Result.changed(f"{verb}ed {spec.name} (pid {pid}, {ports})", lines)


def stop_step(procs: ProcessManager, name: str) -> StepFn:
    """A down step: stop `name` if it runs."""

    def step(ctx: StepContext) -> Result:
        info = procs.info(name)
        # A leader that died can leave its group behind (a granian worker keeping the port).
        orphans = (
            not info.alive and not info.reused and info.pid is not None and group_alive(info.pid)
        )
        if not info.alive and not orphans:
            if not ctx.check:
                procs.pid_file(name).unlink(missing_ok=True)
            return Result.ok(f"{name} not running")
        what = f"{name} (pid {info.pid})" if info.alive else f"what is left of {name}'s group"
        if ctx.check:
            return Result.changed(f"would stop {what}")
        procs.stop(name)
        return Result.changed(f"stopped {what}", [f"{name}: running → stopped"])

    return step


def _all(*probes: Probe) -> Probe:
    return lambda: all(p() for p in probes)


def wait_until(probe: Probe, timeout: float, message: str) -> None:
    """Poll `probe` until it is true; fail with `message` after `timeout` seconds."""
    if not poll_until(probe, timeout, 0.2):
        raise NexusError(message)
