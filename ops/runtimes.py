"""Where restate-server comes from: the npm binary (default), Docker, or nothing
(`external`: a hosted server or Restate Cloud the toolkit only talks to)."""

from __future__ import annotations

import difflib
import json
import platform
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from ops.environments import Environment
from ops.errors import NexusError, RuntimeUnavailable
from ops.processes import ProcessManager, ProcessSpec, group_alive, http_ready, poll_until
from ops.server_config import server_config
from ops.signing import signing_dir
from ops.steps import Context, Result, StepFn

Probe = Callable[[], bool]

SERVER = "restate-server"


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

    def install(self, ctx: Context) -> Result:
        """The pinned npm package, installed into a git-ignored project folder."""
        version = str(self.env.get("restate", "version"))
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
                (env.ingress.host, int(env.get("restate", "node_port"))),
            ],
            ready=_all(
                http_ready(f"{env.admin.url}/health"),
                http_ready(f"{env.ingress.url}/restate/health"),
            ),
            env={"RUST_BACKTRACE": "1"},
            inputs=server_config(env),
            ready_timeout=90.0,
        )

    def server(self, ctx: Context) -> Result:
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


class DockerRuntime:
    """The official image with the same ports and a data volume (needs a Docker engine).

    The container carries the settings it was started with in a label, so a change to
    the image, ports, partitions or signing recreates it instead of reporting ok."""

    SPEC_LABEL = "nexus.spec"
    KEY_IN_CONTAINER = "/restate-signing/private.pem"

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.container = f"nexus-restate-{env.name}"

    def processes(self) -> list[str]:
        return []

    def spec(self) -> list[str]:
        """Everything `docker run` is given after the container's name and label."""
        env = self.env
        data = env.state_dir / "data"
        spec = [
            "--add-host=host.docker.internal:host-gateway",
            "--publish",
            f"{env.ingress.host}:{env.ingress.port}:8080",
            "--publish",
            f"{env.admin.host}:{env.admin.port}:9070",
            "--volume",
            f"{data}:/restate-data",
            "--env",
            "RESTATE_BASE_DIR=/restate-data",
            "--env",
            f"RESTATE_DEFAULT_NUM_PARTITIONS={env.get('restate', 'partitions')}",
        ]
        if env.get("service", "signing"):
            signing = signing_dir(env.state_dir)
            spec += [
                "--volume",
                f"{signing}:{Path(self.KEY_IN_CONTAINER).parent}:ro",
                "--env",
                "RESTATE_WORKER__INVOKER__REQUEST_IDENTITY_PRIVATE_KEY_PEM_FILE="
                + self.KEY_IN_CONTAINER,
            ]
        return [*spec, str(env.get("restate", "image"))]

    def run_command(self) -> list[str]:
        """The `docker run` line this runtime uses."""
        spec = self.spec()
        label = f"{self.SPEC_LABEL}={json.dumps(spec)}"
        return ["docker", "run", "--detach", "--name", self.container, "--label", label, *spec]

    def engine_check(self) -> None:
        docker = shutil.which("docker")
        if docker is None:
            raise RuntimeUnavailable(
                'runtime = docker, but no docker client is on PATH; use runtime = "binary"'
            )
        proc = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or ["no answer"])[-1]
            raise RuntimeUnavailable(
                f"runtime = docker, but no Docker engine answers (`docker info`: {reason});"
                ' use runtime = "binary", which needs no Docker'
            )

    def inspect(self) -> tuple[bool, list[str]] | None:
        """Whether our container is running, and the spec it was started with ([] when
        it carries no label); None when there is no such container."""
        template = f'{{{{.State.Running}}}} {{{{index .Config.Labels "{self.SPEC_LABEL}"}}}}'
        proc = subprocess.run(
            ["docker", "inspect", "--type", "container", "--format", template, self.container],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            return None
        running, _, label = proc.stdout.strip().partition(" ")
        try:
            spec = json.loads(label)
        except ValueError:
            spec = []
        return running == "true", [str(part) for part in spec] if isinstance(spec, list) else []

    def deploy_steps(self) -> list[tuple[str, StepFn]]:
        return [("server", self.server)]

    def down_steps(self, purge: bool) -> list[tuple[str, StepFn]]:
        return [("server", self.stop)]

    def server(self, ctx: Context) -> Result:
        """A container running with this environment's settings, admin and ingress healthy."""
        self.engine_check()
        wanted, found = self.spec(), self.inspect()
        if found == (True, wanted):
            return Result.ok(f"container {self.container} running")
        current = found[1] if found else []
        diff = unified("\n".join(current), "\n".join(wanted), "docker run")
        why = "" if found is None else " (stopped)" if current == wanted else " (settings changed)"
        data = self.env.state_dir / "data"
        note = partitions_note("\n".join(current), "\n".join(wanted), data)
        suffix = f"{why}; {note}" if note else why
        if ctx.check:
            action = "run" if found is None else "recreate"
            return Result.changed(f"would {action} container {self.container}{suffix}", diff)
        subprocess.run(["docker", "rm", "-f", self.container], capture_output=True, check=False)
        data.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(self.run_command(), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise NexusError(f"docker run failed: {proc.stderr.strip()[-1000:]}")
        wait = _all(
            http_ready(f"{self.env.admin.url}/health"),
            http_ready(f"{self.env.ingress.url}/restate/health"),
        )
        wait_until(wait, 90.0, f"container {self.container} did not become healthy")
        past = "started" if found is None else "recreated"
        return Result.changed(f"{past} container {self.container}{suffix}", diff)

    def stop(self, ctx: Context) -> Result:
        """No container of ours left, running or stopped."""
        self.engine_check()
        if self.inspect() is None:
            return Result.ok(f"no container {self.container}")
        if ctx.check:
            return Result.changed(f"would remove container {self.container}")
        subprocess.run(["docker", "rm", "-f", self.container], capture_output=True, check=False)
        return Result.changed(f"removed container {self.container}")


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

    def server(self, ctx: Context) -> Result:
        from ops.admin import AdminClient

        admin = AdminClient(self.env.admin.url, self.env.token)
        try:
            version = admin.version().get("version", "?")
        finally:
            admin.close()
        return Result.ok(f"external restate-server {version} answers at {self.env.admin.url}")


def ensure_process(
    procs: ProcessManager,
    spec: ProcessSpec,
    ctx: Context,
    *,
    diff: list[str] | None = None,
    before_start: Callable[[], None] | None = None,
) -> Result:
    """Running with the wanted fingerprint → ok; otherwise (re)start → changed."""
    info = procs.info(spec.name)
    wanted = spec.fingerprint()
    if info.alive and info.fingerprint == wanted and not diff:
        if spec.ready():
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

    def step(ctx: Context) -> Result:
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
