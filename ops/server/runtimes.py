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
from ops.base.errors import ConfigError, NexusError, RuntimeUnavailable
from ops.base.processes import (
    ProcessManager,
    ProcessSpec,
    group_alive,
    http_ready,
    poll_until,
)
from ops.base.steps import Result, StepContext, StepFn
from ops.server.server_config import server_config
from ops.server.server_upgrade import (
    Marker,
    markers,
    parse_version,
    show,
    unknown_config_keys,
)
from ops.server.version_switch import SwitchSteps, archive_path, plan_line, switch

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


def npm_platform() -> str:
    """The suffix of the npm packages that carry this machine's binaries (`linux-x64`)."""
    arch = {"x86_64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine(), "x64")
    return f"{platform.system().lower()}-{arch}"


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
        return self.binary_of(self.env.settings.restate.version)

    def binary_of(self, version: str) -> Path:
        """Where the npm package of `version` puts restate-server (installed or not)."""
        pkg = f"restate-server-{npm_platform()}"
        npm = self.env.npm_dir.with_name(f"restate-server-{version}")
        return npm / "node_modules" / "@restatedev" / pkg / "bin" / "restate-server"

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
        found = markers(self.env.state_dir)
        target = parse_version(self.env.settings.restate.version)
        if found and found[0].current != target:
            return self.switch_version(ctx, found[0], current, wanted, diff)
        result = ensure_process(
            self.procs, self.spec(), ctx, diff=diff, before_start=lambda: self._write(wanted)
        )
        return replace(result, message=f"{result.message}; {note}") if note else result

    def _write(self, config: str) -> None:
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        (self.env.state_dir / "data").mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(config)

    def switch_version(
        self, ctx: StepContext, marker: Marker, current: str, wanted: str, diff: list[str]
    ) -> Result:
        """Another version on the same data (`ops.server.version_switch`), after the
        target's own config keys are checked against the config the toolkit writes."""
        env = self.env
        old, new = show(marker.current), env.settings.restate.version
        if self.binary.is_file():
            unknown = unknown_config_keys(self.binary, wanted, env.state_dir / "tmp")
            if unknown:
                raise ConfigError(
                    f"restate-server {new} does not know {', '.join(unknown)} in the config"
                    f" the toolkit writes ({self.config_file}); it would ignore them"
                    " silently, so nothing was stopped"
                )
        archive = archive_path(env, new)
        lines = [*diff, plan_line(old, new, archive)]
        if ctx.check:
            return Result.changed(f"would switch {SERVER} {old} → {new}", lines)

        def start() -> str:
            self._write(wanted)
            return f"pid {self.procs.start(self.spec())}"

        steps = SwitchSteps(
            running=self.procs.info(SERVER).alive,
            stop=lambda: self.procs.stop(SERVER),
            start=start,
            stop_target=lambda: self.procs.stop(SERVER),
            go_back=lambda: self.go_back(old, current, archive),
        )
        return Result.changed(switch(env, old, new, archive, steps), lines)

    def go_back(self, old: str, config: str, archive: Path) -> str:
        """The old binary started on the data put back; what happened, in words."""
        binary = self.binary_of(old)
        if not binary.is_file():
            return (
                f"not gone back: restate-server {old} is not installed ({binary}); the data"
                f" as it was is back in place (archive {archive})"
            )
        self.config_file.write_text(config)
        spec = replace(self.spec(), argv=[str(binary), *self.spec().argv[1:]], inputs=config)
        try:
            pid = self.procs.start(spec)
        except NexusError as exc:
            return f"going back to {old} failed too: {exc}; the archive is {archive}"
        return (
            f"went back to restate-server {old} (pid {pid}) on the data as it was before the"
            f" switch (archive {archive}); the stack serves on {old}: pin {old} again, or"
            " fix what stopped the new one"
        )


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
