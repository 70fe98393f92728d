"""Where restate-server comes from: the npm binary (default), Docker, or nothing
(`external`: a hosted server or Restate Cloud the toolkit only talks to)."""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

from ops.docker_cli import docker, server_version
from ops.environments import Environment
from ops.errors import ConfigError, NexusError, PortInUse, RuntimeUnavailable
from ops.processes import (
    ProcessManager,
    ProcessSpec,
    group_alive,
    http_ready,
    poll_until,
    port_free,
)
from ops.server_config import server_config
from ops.signing import signing_dir
from ops.steps import Result, StepContext, StepFn

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


def container_name(env: Environment) -> str:
    """`nexus-restate-ENV-HASH`: the hash of the state folder keeps two checkouts (or two
    test stacks) with the same environment name from sharing one container."""
    digest = hashlib.sha256(str(env.state_dir.resolve()).encode()).hexdigest()[:8]
    return f"nexus-restate-{env.name}-{digest}"


def bind_ip(host: str) -> str:
    """An address restate-server can bind: IP literals as they are, names (`localhost`)
    resolved to their first IPv4 address."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return str(socket.getaddrinfo(host, None, socket.AF_INET)[0][4][0])
    except (OSError, IndexError):
        raise ConfigError(f"cannot resolve {host!r} to an address to bind") from None


@dataclass(frozen=True)
class ContainerState:
    """What `docker inspect` says about our container."""

    status: str  # created | running | exited | dead | ...
    exit_code: int
    started_at: str
    image: str
    spec: list[str]  # the settings it was started with ([] when it carries no label)

    @property
    def running(self) -> bool:
        return self.status == "running"


class DockerRuntime:
    """restate-server in a container with host networking, bound to the environment's own
    addresses (so it reaches the service on the host at 127.0.0.1), data in a bind mount
    of `STATE/data` under a fixed node name (so a new container keeps the old data).

    The container carries the settings it was started with in a label, so a change to
    the image, ports, partitions or signing recreates it instead of reporting ok."""

    SPEC_LABEL = "nexus.spec"
    STATE_LABEL = "nexus.state"
    KEY_IN_CONTAINER = "/restate-signing/private.pem"
    STOP_SECONDS = 10  # `docker stop -t`: SIGTERM, then SIGKILL after this
    HEALTH_TIMEOUT = 90.0
    LOG_LINES = 20

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.container = container_name(env)

    def processes(self) -> list[str]:
        return []

    @property
    def data_dir(self) -> Path:
        return self.env.state_dir / "data"

    def addresses(self) -> dict[str, str]:
        """ingress, admin and node: the IP:port each listener binds on the host."""
        env = self.env
        return {
            "ingress": f"{bind_ip(env.ingress.host)}:{env.ingress.port}",
            "admin": f"{bind_ip(env.admin.host)}:{env.admin.port}",
            "node": f"{bind_ip(env.ingress.host)}:{env.settings.restate.node_port}",
        }

    def spec(self) -> list[str]:
        """Everything `docker run` is given after the container's name and labels."""
        env = self.env
        bound = self.addresses()
        variables = {
            "RESTATE_BASE_DIR": "/restate-data",
            "RESTATE_NODE_NAME": f"nexus-{env.name}",
            "RESTATE_CLUSTER_NAME": f"nexus-{env.name}",
            "RESTATE_DEFAULT_NUM_PARTITIONS": str(env.settings.restate.partitions),
            "RESTATE_BIND_ADDRESS": bound["node"],
            "RESTATE_ADVERTISED_ADDRESS": f"http://{bound['node']}/",
            "RESTATE_LISTEN_MODE": "tcp",
            "RESTATE_INGRESS__BIND_ADDRESS": bound["ingress"],
            "RESTATE_ADMIN__BIND_ADDRESS": bound["admin"],
            "RESTATE_DISABLE_TELEMETRY": "true",
            "RESTATE_LOG_FORMAT": "compact",
            "RESTATE_LOG_DISABLE_ANSI_CODES": "true",
        }
        mounts = [f"{self.data_dir}:/restate-data"]
        if env.settings.service.signing:
            signing = signing_dir(env.state_dir)
            mounts.append(f"{signing}:{Path(self.KEY_IN_CONTAINER).parent}:ro")
            variables["RESTATE_WORKER__INVOKER__REQUEST_IDENTITY_PRIVATE_KEY_PEM_FILE"] = (
                self.KEY_IN_CONTAINER
            )
        spec = ["--network", "host", "--user", f"{os.getuid()}:{os.getgid()}"]
        for mount in mounts:
            spec += ["--volume", mount]
        for name, value in variables.items():
            spec += ["--env", f"{name}={value}"]
        return [*spec, env.settings.restate.image]

    def run_command(self) -> list[str]:
        """The `docker run` line this runtime uses."""
        spec = self.spec()
        return [
            "docker",
            "run",
            "--detach",
            "--name",
            self.container,
            "--label",
            f"{self.SPEC_LABEL}={json.dumps(spec)}",
            "--label",
            f"{self.STATE_LABEL}={self.env.state_dir.resolve()}",
            *spec,
        ]

    def engine_check(self) -> str:
        """The engine's version; RuntimeUnavailable when no client or engine answers."""
        if shutil.which("docker") is None:
            raise RuntimeUnavailable(
                'runtime = docker, but no docker client is on PATH; use runtime = "binary"'
            )
        version = server_version()
        if version is None:
            raise RuntimeUnavailable(
                "runtime = docker, but no Docker engine answers (`docker version`);"
                ' start one (`python -m ops.engine up`) or use runtime = "binary"'
            )
        return version

    def inspect(self) -> ContainerState | None:
        """Our container's state, or None when there is no such container."""
        template = (
            "{{.State.Status}} {{.State.ExitCode}} {{.State.StartedAt}} {{.Config.Image}} "
            f'{{{{index .Config.Labels "{self.SPEC_LABEL}"}}}}'
        )
        proc = docker("inspect", "--type", "container", "--format", template, self.container)
        if proc.returncode != 0:
            return None
        status, code, started, image, label = (proc.stdout.strip().split(" ", 4) + [""] * 5)[:5]
        try:
            spec = json.loads(label)
        except ValueError:
            spec = []
        return ContainerState(
            status=status,
            exit_code=int(code) if code.lstrip("-").isdigit() else -1,
            started_at=started,
            image=image,
            spec=[str(part) for part in spec] if isinstance(spec, list) else [],
        )

    def logs_tail(self) -> str:
        """The last lines of `docker logs`, or why there are none."""
        proc = docker("logs", "--tail", str(self.LOG_LINES), self.container)
        text = (proc.stdout + proc.stderr).strip()
        return text or "(docker logs printed nothing)"

    def deploy_steps(self) -> list[tuple[str, StepFn]]:
        return [("image", self.image), ("server", self.server)]

    def down_steps(self, purge: bool) -> list[tuple[str, StepFn]]:
        return [("server", self.stop)]

    def image(self, ctx: StepContext) -> Result:
        """The server's image present; a missing stand-in (`nexus-local/restate-server:V`)
        is built from the npm package of version V, as `python -m ops.engine up` does."""
        from ops import engine  # engine builds on this module; imported when needed

        self.engine_check()
        tag = self.env.settings.restate.image
        if engine.image_present(tag):
            return Result.ok(f"image {tag} present")
        stand_in = re.fullmatch(r"nexus-local/restate-server:(\d+\.\d+\.\d+)", tag)
        if stand_in is None:
            raise RuntimeUnavailable(
                f"image {tag} is not in the engine and no registry is reachable to pull it:"
                f' `docker pull {tag}` where one is, or use image = "nexus-local/'
                f'restate-server:{self.env.settings.restate.version}" (built here)'
            )
        if stand_in.group(1) != self.env.settings.restate.version:
            raise ConfigError(
                f"{self.env.file}: [restate] image {tag} names another version than"
                f" [restate] version = {self.env.settings.restate.version}"
            )
        if ctx.check:
            return Result.changed(f"would build {tag} from @restatedev/restate-server")
        binary = BinaryRuntime(self.env, ProcessManager(self.env.state_dir))
        binary.install(ctx)
        image_id = engine.build_image(binary.binary, tag)
        return Result.changed(f"built {tag} ({image_id[:19]}) from the npm package")

    def server(self, ctx: StepContext) -> Result:
        """A container running with this environment's settings, admin and ingress healthy."""
        self.engine_check()
        wanted, found = self.spec(), self.inspect()
        if found is not None and found.running and found.spec == wanted:
            return Result.ok(f"container {self.container} running")
        current = found.spec if found else []
        diff = unified("\n".join(current), "\n".join(wanted), "docker run")
        why = ""
        if found is not None:
            why = f" ({found.status})" if current == wanted else " (settings changed)"
        note = partitions_note("\n".join(current), "\n".join(wanted), self.data_dir)
        suffix = f"{why}; {note}" if note else why
        if ctx.check:
            action = "run" if found is None else "recreate"
            return Result.changed(f"would {action} container {self.container}{suffix}", diff)
        if found is not None:
            self.remove()
        self._check_ports()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        proc = docker(*self.run_command()[1:], timeout=120)
        if proc.returncode != 0:
            raise NexusError(f"docker run failed: {proc.stderr.strip()[-1000:]}")
        took = self.wait_healthy()
        past = "started" if found is None else "recreated"
        return Result.changed(
            f"{past} container {self.container}{suffix}, healthy after {took:.1f}s", diff
        )

    def _check_ports(self) -> None:
        for what, address in self.addresses().items():
            host, _, port = address.rpartition(":")
            if not port_free(host, int(port)):
                raise PortInUse(
                    f"container {self.container}: {what} port {port} on {host} is already in"
                    " use by something else; stop it, or choose another port in the"
                    " environment file"
                )

    def healthy(self) -> bool:
        return (
            http_ready(f"{self.env.admin.url}/health")()
            and http_ready(f"{self.env.ingress.url}/restate/health")()
        )

    def wait_healthy(self) -> float:
        """Seconds until admin and ingress answer; a container that exits meanwhile is
        reported at once with the tail of its log."""
        started = time.monotonic()
        deadline = started + self.HEALTH_TIMEOUT
        while True:
            if self.healthy():
                return time.monotonic() - started
            state = self.inspect()
            if state is None or state.status in ("exited", "dead"):
                what = "vanished" if state is None else f"exited with code {state.exit_code}"
                tail = self.logs_tail() if state is not None else ""
                raise NexusError(
                    f"container {self.container} {what}"
                    f" {time.monotonic() - started:.1f}s after `docker run`;"
                    f" last lines of `docker logs {self.container}`:\n{tail}"
                )
            if time.monotonic() > deadline:
                raise NexusError(
                    f"container {self.container} did not become healthy in"
                    f" {self.HEALTH_TIMEOUT:g}s; last lines of `docker logs`:\n{self.logs_tail()}"
                )
            time.sleep(0.25)

    def remove(self) -> str:
        """`docker stop -t` (graceful), then `docker rm`; what was done. Failures raise."""
        started = time.monotonic()
        stop = docker("stop", "--time", str(self.STOP_SECONDS), self.container, timeout=60)
        if stop.returncode != 0 and "No such container" not in stop.stderr:
            raise NexusError(f"docker stop {self.container} failed: {stop.stderr.strip()}")
        stopped = time.monotonic() - started
        rm = docker("rm", self.container)
        if rm.returncode != 0 and "No such container" not in rm.stderr:
            raise NexusError(f"docker rm {self.container} failed: {rm.stderr.strip()}")
        return f"stopped in {stopped:.1f}s and removed"

    def stop(self, ctx: StepContext) -> Result:
        """No container of ours left, running or stopped. Without an engine nothing can
        run, so the step is skipped and a purge after it still happens."""
        if shutil.which("docker") is None or server_version() is None:
            return Result.skipped(
                f"no Docker engine answers: container {self.container}, if any, left as is"
            )
        if self.inspect() is None:
            return Result.ok(f"no container {self.container}")
        if ctx.check:
            return Result.changed(f"would stop and remove container {self.container}")
        done = self.remove()
        return Result.changed(f"container {self.container} {done}")

    def kill(self) -> bool:
        """`docker kill` (SIGKILL) our container, for chaos; whether it was running."""
        return docker("kill", self.container).returncode == 0

    def running(self) -> bool:
        state = self.inspect()
        return state is not None and state.running

    def status_lines(self) -> list[str]:
        """The container as `invoke status` shows it."""
        lines = ["container"]
        if shutil.which("docker") is None or (version := server_version()) is None:
            return [*lines, f"  {self.container}  unknown: no Docker engine answers"]
        state = self.inspect()
        if state is None:
            return [*lines, f"  {self.container}  absent (Docker {version})"]
        how = state.status if state.running else f"{state.status} (exit code {state.exit_code})"
        stale = "" if state.spec == self.spec() else "  settings differ: deploy recreates it"
        lines.append(
            f"  {self.container}  {how}  image {state.image}  since {state.started_at}{stale}"
        )
        return lines


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
