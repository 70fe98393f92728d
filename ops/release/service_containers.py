"""`[service] mode = "container"`: each service version runs as a container of its own
image, side by side, named by the same instance names as processes
(`service-<version>-<port>`), so the rollout's decisions do not change.

Like restate-server's container, a service container runs with host networking and
binds the instance's port on the environment's address itself (the server reaches it at
`http://127.0.0.1:<port>`); the mail outbox is mounted at the path the settings name, so
a container and a process of one version are given the very same settings."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ops.base.docker_cli import docker
from ops.base.environments import Environment
from ops.base.errors import NexusError
from ops.base.processes import http_ready, poll_until
from ops.base.steps import Result
from ops.release.images import image_id, image_tag
from ops.release.versions import Instance

LABEL_STATE = "nexus.state"
LABEL_INSTANCE = "nexus.instance"
LABEL_FINGERPRINT = "nexus.fingerprint"
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 3  # as a process gets: Restate replays whatever was in flight


class ContainerError(NexusError):
    """A service container could not be started or stopped."""


@dataclass(frozen=True)
class ContainerInfo:
    """One service container as the engine reports it."""

    name: str
    id: str
    running: bool
    image: str
    pid: int | None
    fingerprint: str
    exit_code: int | None


class ServiceContainers:
    """The service containers of one environment (its state folder, in their labels)."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.state = str(env.state_dir.resolve())
        self._prefix = f"nexus-svc-{env.name}-{hashlib.sha256(self.state.encode()).hexdigest()[:8]}"

    def container(self, name: str) -> str:
        return f"{self._prefix}-{name.removeprefix('service-')}"

    def known(self) -> dict[str, ContainerInfo]:
        """Instance name → container, for every service container of this environment."""
        listed = docker(
            "ps", "-a", "-q", "--no-trunc", "--filter", f"label={LABEL_STATE}={self.state}"
        )
        ids = listed.stdout.split()
        if listed.returncode != 0 or not ids:
            return {}
        proc = docker("inspect", *ids)
        found: dict[str, ContainerInfo] = {}
        for raw in json.loads(proc.stdout or "[]") if proc.returncode == 0 else []:
            info = _info(raw)
            labels = raw.get("Config", {}).get("Labels") or {}
            instance = str(labels.get(LABEL_INSTANCE, ""))
            if instance:
                found[instance] = info
        return found

    def inspect(self, name: str) -> ContainerInfo | None:
        proc = docker("inspect", self.container(name))
        if proc.returncode != 0:
            return None
        rows = json.loads(proc.stdout or "[]")
        return _info(rows[0]) if rows else None

    def argv(self, instance: Instance, image: str, settings: Mapping[str, str]) -> list[str]:
        """`docker run` for `instance` (without the fingerprint label)."""
        if instance.port is None:
            raise ContainerError("container mode serves HTTP: an instance needs a port")
        host = self.env.service.host
        env_args = [arg for key in sorted(settings) for arg in ("-e", f"{key}={settings[key]}")]
        outbox = settings.get("NEXUS_MAIL_OUTBOX")
        mounts = ["-v", f"{outbox}:{outbox}"] if outbox else []
        return [
            "run", "-d", "--name", self.container(instance.name), "--network", "host",
            "--user", f"{os.getuid()}:{os.getgid()}",
            "--label", f"{LABEL_STATE}={self.state}",
            "--label", f"{LABEL_INSTANCE}={instance.name}",
            *env_args, *mounts, image,
            "--host", "127.0.0.1" if host == "localhost" else host,
            "--port", str(instance.port), "service.app:app",
        ]  # fmt: skip

    def ensure(self, instance: Instance, settings: Mapping[str, str], check: bool) -> Result:
        """The instance's container runs its version's image with these settings: ok;
        otherwise (re)create it and wait until it answers → changed."""
        tag = image_tag(instance.version)
        wanted_image = image_id(tag)
        if wanted_image is None and check:
            return Result.changed(
                f"would start {instance.name} from {tag} once it is built",
                [f"{instance.name}: stopped → running"],
            )
        if wanted_image is None:
            raise ContainerError(
                f"image {tag} of version {instance.version} is not on the engine:"
                f" `invoke build --env {self.env.name}` builds it from the version's sources"
            )
        argv = self.argv(instance, tag, settings)
        fingerprint = hashlib.sha256(json.dumps([wanted_image, argv]).encode()).hexdigest()[:16]
        found = self.inspect(instance.name)
        url = f"http://{self.env.service.host}:{instance.port}/health"
        current = found is not None and found.running and found.fingerprint == fingerprint
        if current and found is not None and poll_until(http_ready(url), 5.0, 0.5):
            return Result.ok(f"{instance.name} running (container {found.id[:12]})")
        verb = "recreate" if found else "start"
        lines = [f"{instance.name}: {'container changed' if found else 'stopped → running'}"]
        if check:
            return Result.changed(f"would {verb} container of {instance.name}", lines)
        if found:
            self.remove(instance.name)
        run = docker(*argv[:1], "--label", f"{LABEL_FINGERPRINT}={fingerprint}", *argv[1:])
        if run.returncode != 0:
            raise ContainerError(f"docker run of {instance.name} failed: {run.stderr.strip()}")
        if not poll_until(lambda: self._ready_or_dead(instance.name, url), READY_TIMEOUT_S, 0.2):
            raise ContainerError(f"{instance.name} did not answer {url} in {READY_TIMEOUT_S:g}s")
        now = self.inspect(instance.name)
        if now is None or not now.running:
            logs = docker("logs", "--tail", "20", self.container(instance.name))
            raise ContainerError(
                f"container of {instance.name} exited (code {now.exit_code if now else '?'}):\n"
                f"{(logs.stdout + logs.stderr)[-1500:]}"
            )
        return Result.changed(f"{verb}ed {instance.name} as container {now.id[:12]} ({tag})", lines)

    def _ready_or_dead(self, name: str, url: str) -> bool:
        if http_ready(url)():
            return True
        found = self.inspect(name)
        return found is None or not found.running

    def running(self, name: str) -> bool:
        found = self.inspect(name)
        return found is not None and found.running

    def stop(self, name: str) -> bool:
        """Stop and remove `name`'s container; True if there was one."""
        if self.inspect(name) is None:
            return False
        self.remove(name)
        return True

    def remove(self, name: str) -> None:
        container = self.container(name)
        docker("stop", "-t", str(STOP_TIMEOUT_S), container, timeout=60)
        gone = docker("rm", "-f", container)
        if gone.returncode != 0 and self.inspect(name) is not None:
            raise ContainerError(f"docker rm {container} failed: {gone.stderr.strip()}")

    def kill(self, name: str) -> str | None:
        """SIGKILL the container (fault injection); what was killed, or None."""
        found = self.inspect(name)
        if found is None or not found.running:
            return None
        docker("kill", self.container(name))
        return f"container {found.id[:12]}"

    def describe(self, name: str) -> dict[str, Any]:
        found = self.inspect(name)
        if found is None:
            return {"container": None, "image": None, "running": False, "pid": None}
        return {
            "container": found.id[:12],
            "image": found.image,
            "running": found.running,
            "pid": found.pid,
        }


def _info(raw: dict[str, Any]) -> ContainerInfo:
    state = raw.get("State") or {}
    labels = (raw.get("Config") or {}).get("Labels") or {}
    pid = int(state.get("Pid") or 0)
    return ContainerInfo(
        name=str(raw.get("Name", "")).lstrip("/"),
        id=str(raw.get("Id", "")),
        running=bool(state.get("Running")),
        image=str((raw.get("Config") or {}).get("Image", "")),
        pid=pid or None,
        fingerprint=str(labels.get(LABEL_FINGERPRINT, "")),
        exit_code=None if state.get("Running") else int(state.get("ExitCode") or 0),
    )
