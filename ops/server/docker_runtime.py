"""The Docker runtime: restate-server in a container of the pinned image, its data on a
bind mount under the environment's state folder."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from ops.base.docker_cli import docker, server_version
from ops.base.environments import Environment
from ops.base.errors import ConfigError, NexusError, PortInUse, RuntimeUnavailable
from ops.base.processes import (
    ProcessManager,
    http_ready,
    port_free,
)
from ops.base.signing import signing_dir
from ops.base.steps import Result, StepContext, StepFn
from ops.server import engine
from ops.server.runtimes import (
    BinaryRuntime,
    partitions_note,
    unified,
)
from ops.server.server_upgrade import markers, parse_version, show, unknown_env_keys
from ops.server.version_switch import SwitchSteps, archive_path, plan_line, switch


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

    def variables(self) -> dict[str, str]:
        """The server's configuration, as the `RESTATE_` variables the container gets."""
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
        if env.settings.service.signing:
            variables["RESTATE_WORKER__INVOKER__REQUEST_IDENTITY_PRIVATE_KEY_PEM_FILE"] = (
                self.KEY_IN_CONTAINER
            )
        return variables

    def spec(self) -> list[str]:
        """Everything `docker run` is given after the container's name and labels."""
        env = self.env
        mounts = [f"{self.data_dir}:/restate-data"]
        if env.settings.service.signing:
            signing = signing_dir(env.state_dir)
            mounts.append(f"{signing}:{Path(self.KEY_IN_CONTAINER).parent}:ro")
        spec = ["--network", "host", "--user", f"{os.getuid()}:{os.getgid()}"]
        for mount in mounts:
            spec += ["--volume", mount]
        for name, value in self.variables().items():
            spec += ["--env", f"{name}={value}"]
        return [*spec, env.settings.restate.image]

    def run_command(self, spec: list[str] | None = None) -> list[str]:
        """The `docker run` line this runtime uses (with `spec`: another container's)."""
        spec = self.spec() if spec is None else spec
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
                ' start one (`python -m ops.server.engine up`) or use runtime = "binary"'
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
        is built from the npm package of version V, as `python -m ops.server.engine up` does."""
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
        data = markers(self.env.state_dir)
        if data and data[0].current != parse_version(self.env.settings.restate.version):
            return self.switch_version(ctx, show(data[0].current), found, diff)
        if ctx.check:
            action = "run" if found is None else "recreate"
            return Result.changed(f"would {action} container {self.container}{suffix}", diff)
        if found is not None:
            self.remove()
        took = self._run()
        past = "started" if found is None else "recreated"
        return Result.changed(
            f"{past} container {self.container}{suffix}, healthy after {took:.1f}s", diff
        )

    def switch_version(
        self, ctx: StepContext, old: str, found: ContainerState | None, diff: list[str]
    ) -> Result:
        """Another version on the same data (`ops.server.version_switch`): the target
        image's own keys checked against the variables the toolkit sets, then the old
        container replaced; when the new one does not come up, the archived data goes back
        and a container of the old one's settings starts on it."""
        env, image = self.env, self.env.settings.restate.image
        new = env.settings.restate.version
        unknown = unknown_env_keys(image, self.variables())
        if unknown:
            raise ConfigError(
                f"restate-server {new} ({image}) does not know {', '.join(unknown)} among the"
                " RESTATE_ variables the toolkit sets; it would ignore them silently, so"
                " nothing was stopped"
            )
        archive = archive_path(env, new)
        lines = [*diff, plan_line(old, new, archive)]
        if ctx.check:
            return Result.changed(
                f"would switch restate-server {old} → {new} (container {self.container},"
                f" image {found.image if found else 'none'} → {image})",
                lines,
            )
        earlier = found.spec if found is not None and found.spec else None

        def start(spec: list[str] | None = None) -> str:
            took = self._run(spec)
            return f"image {(spec or self.spec())[-1]}, healthy after {took:.1f}s"

        def go_back() -> str:
            if earlier is None:
                return (
                    f"not gone back: no earlier container of {old} to start again; the data"
                    f" as it was is back in place (archive {archive}): pin {old} and deploy"
                )
            try:
                started = start(earlier)
            except NexusError as exc:
                return f"going back to {old} failed too: {exc}; the archive is {archive}"
            return (
                f"went back to restate-server {old} (container {self.container}, {started}) on"
                f" the data as it was before the switch (archive {archive}); the stack serves"
                f" on {old}: pin {old} again, or fix what stopped the new one"
            )

        steps = SwitchSteps(
            running=found is not None and found.running,
            stop=self.remove if found is not None else lambda: None,
            start=start,
            stop_target=self.remove,
            go_back=go_back,
        )
        return Result.changed(switch(env, old, new, archive, steps), lines)

    def _run(self, spec: list[str] | None = None) -> float:
        """`docker run` this runtime's container (with `spec`: another container's
        settings) on free ports; seconds until healthy."""
        self._check_ports()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        proc = docker(*self.run_command(spec)[1:], timeout=120)
        if proc.returncode != 0:
            raise NexusError(f"docker run failed: {proc.stderr.strip()[-1000:]}")
        return self.wait_healthy()

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
