"""How a version of the service runs: its instances (a process on the version's own
virtualenv, a Restate Cloud tunnel, or a container of its image), started from the
version's artefact, stopped, killed and described. `Release` builds on it."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from ops.base.environments import Endpoint, Environment
from ops.base.processes import ProcessManager, ProcessSpec
from ops.base.steps import Result, StepContext
from ops.release.artefacts import Artefact, ArtefactError, Artefacts, venv_matches
from ops.release.granian import asgi_spec
from ops.release.service_containers import ServiceContainers
from ops.release.versions import Instance
from ops.server.runtimes import ensure_process
from service import settings_names as names

CONNECT_STOP_S = 130.0  # the SDK drains a tunnel for up to 120 s on SIGTERM
_CONNECT_ADDRESS = re.compile(r"Register this deployment as (\S+)")


class VersionInstances:
    """The instances of an environment's service versions, by mode."""

    def __init__(
        self,
        env: Environment,
        procs: ProcessManager,
        settings: Callable[[], Mapping[str, str]],
    ) -> None:
        self.env = env
        self.procs = procs
        self._settings = settings

    @cached_property
    def settings(self) -> dict[str, str]:
        """What the service is given (part of its version), read at first use: after
        deploy's earlier steps, such as the signing key's."""
        return dict(self._settings())

    @property
    def version(self) -> str:
        """The version the current sources run as: `Release` works it out."""
        raise NotImplementedError

    @property
    def versions_dir(self) -> Path:
        return self.env.state_dir / "versions"

    @property
    def mode(self) -> str:
        return self.env.service_mode

    @cached_property
    def artefacts(self) -> Artefacts:
        return Artefacts(self.env.root)

    @cached_property
    def containers(self) -> ServiceContainers:
        return ServiceContainers(self.env)

    def venv(self, version: str) -> Path:
        """Where a version's own virtualenv lives (process and connect modes)."""
        return self.versions_dir / version / "venv"

    # --- instances -------------------------------------------------------------------

    def uri(self, instance: Instance) -> str:
        """What Restate is told to call for `instance`."""
        if instance.port is None:
            return self.connect_address(instance) or f"connect://{self.connect_name(instance)}"
        return f"http://{self.env.service.host}:{instance.port}/"

    def connect_name(self, instance: Instance) -> str:
        return f"{self.env.settings.service.connect_name}-{instance.version}"

    def connect_address(self, instance: Instance) -> str | None:
        """The address the SDK printed for the tunnel after its handshake (the log since
        its last start), or None before that."""
        try:
            text = self.procs.log_file(instance.name).read_text(errors="replace")
        except OSError:
            return None
        found = _CONNECT_ADDRESS.findall(text.rsplit("\n--- start ", 1)[-1])
        return found[-1] if found else None

    def instance_settings(self, instance: Instance) -> dict[str, str]:
        return {**self.settings, names.VERSION: instance.version}

    def spec(self, instance: Instance) -> ProcessSpec:
        """How `instance` runs as a process: on its version's own virtualenv (made from
        the version's wheel and lock), never on the toolkit's Python or working tree."""
        home = self.versions_dir / instance.version
        python = self.venv(instance.version) / "bin" / "python"
        env = self.instance_settings(instance)
        if instance.port is None:
            return self._connect_spec(instance, home, python, env)
        endpoint = Endpoint(f"http://{self.env.service.host}:{instance.port}")
        return asgi_spec(
            instance.name,
            "service.app:app",
            endpoint,
            home,
            inputs=instance.version,
            env=env,
            python=str(python),
        )

    def _connect_spec(
        self, instance: Instance, home: Path, python: Path, env: dict[str, str]
    ) -> ProcessSpec:
        """`python -m restate connect`: an outbound tunnel to Restate Cloud, no port; ready
        once the SDK reports its handshake with the address to register."""
        key_var = self.env.settings.service.connect_key_env
        key = self.env.require_secret(key_var, "service mode connect needs a connect key")
        name = self.connect_name(instance)
        return ProcessSpec(
            name=instance.name,
            argv=[str(python), "-m", "restate", "connect", "service.app:app", "--name", name],
            cwd=home,
            ports=[],
            ready=lambda: self.connect_address(instance) is not None,
            env=env,
            secret_env={"RESTATE_CONNECT_KEY": key},
            inputs=instance.version,
            stop_timeout=CONNECT_STOP_S,
            ready_timeout=60.0,
        )

    def instances(self) -> tuple[frozenset[Instance], frozenset[Instance]]:
        """(alive, known): the instances whose process runs (or container), and those
        with a PID file (or a container, running or not)."""
        if self.mode == "container":
            found = self.containers.known()
            known = {i for i in map(Instance.parse, found) if i is not None}
            alive = {i for i in known if found[i.name].running}
            return frozenset(alive), frozenset(known)
        known = {i for i in map(Instance.parse, self.procs.known()) if i is not None}
        alive = {i for i in known if self.procs.info(i.name).alive}
        return frozenset(alive), frozenset(known)

    # --- running an instance (process or container) ----------------------------------

    def ensure_instance(self, instance: Instance, ctx: StepContext) -> Result:
        """`instance` runs its version's artefact: ok, or (re)started → changed."""
        if self.mode == "container":
            return self.containers.ensure(instance, self.instance_settings(instance), ctx.check)
        if ctx.check and not venv_matches(self.venv(instance.version), self._artefact_of(instance)):
            return Result.changed(
                f"would make the virtualenv of version {instance.version} and start"
                f" {instance.name}",
                [f"{instance.name}: stopped → running"],
            )
        self._ensure_venv(instance)
        return ensure_process(self.procs, self.spec(instance), ctx)

    def _artefact_of(self, instance: Instance) -> Artefact:
        return self.artefacts.artefact(instance.version)

    def _ensure_venv(self, instance: Instance) -> None:
        """The version's virtualenv exists; made from its artefact when it does not. A
        venv made once is kept as it is (it is what that version runs, whatever the
        toolkit's own venv holds later)."""
        venv = self.venv(instance.version)
        if (venv / "bin" / "python").exists() and (venv / "nexus-artefact.json").is_file():
            return
        artefact = self._artefact_of(instance)
        if not artefact.present():
            raise ArtefactError(self._missing(instance, f"its artefact {artefact.home}"))
        self.artefacts.make_venv(artefact, venv)

    def _missing(self, instance: Instance, what: str) -> str:
        if instance.version == self.version:
            return (
                f"version {instance.version}: {what} is missing:"
                f" `invoke build --env {self.env.name}` makes it"
            )
        return (
            f"{instance.name} must run to drain its invocations, but {what} is gone"
            f" (and so is {self.venv(instance.version)}): rebuild it from the commit that"
            f" deployed version {instance.version} (`invoke build --env {self.env.name}`"
            " there), or cancel its work (`invoke invocations`, `invoke cancel`);"
            " nothing else was changed"
        )

    def instance_alive(self, name: str) -> bool:
        if self.mode == "container":
            return self.containers.running(name)
        return self.procs.info(name).alive

    def stop_instance(self, name: str) -> None:
        if self.mode == "container":
            self.containers.stop(name)
        else:
            self.procs.stop(name)

    def kill_instance(self, name: str) -> str | None:
        """SIGKILL an instance (fault injection): what was killed, or None."""
        if self.mode == "container":
            return self.containers.kill(name)
        pid = self.procs.kill(name)
        return None if pid is None else f"pid {pid}"

    def describe_instance(self, name: str) -> dict[str, Any]:
        """pid, running, and in container mode the container id and image."""
        if self.mode == "container":
            return self.containers.describe(name)
        info = self.procs.info(name)
        return {"pid": info.pid, "running": info.alive, "python": str(self.spec_python(name))}

    def spec_python(self, name: str) -> Path | None:
        instance = Instance.parse(name)
        return None if instance is None else self.venv(instance.version) / "bin" / "python"
