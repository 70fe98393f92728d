"""One environment's whole stack: server runtime, mock gateway, service, registration.

`deploy`, `down` and `status` are plays of idempotent steps over it."""

from __future__ import annotations

import shutil
import sys
from functools import cached_property
from pathlib import Path
from typing import Any, TextIO

from ops.base.environments import Environment
from ops.base.errors import NexusError
from ops.base.processes import ProcessManager, ProcessSpec
from ops.base.signing import ensure_key_pair, private_key_file, read_key_id, signing_dir
from ops.base.steps import Play, Result, StepContext, StepFn
from ops.clients.admin import AdminClient, IngressClient
from ops.clients.invocations import open_invocations
from ops.release.granian import GRANIAN, asgi_spec, source_digest
from ops.release.release import SMOKE_TICKET, Release, ReleaseOptions, version_lines
from ops.release.versions import Instance
from ops.server.cluster_features import rollback_check
from ops.server.runtimes import ServerRuntime, ensure_process, stop_step
from ops.server.server_runtime import runtime_for
from ops.server.server_upgrade import markers, upgrade_step
from service import settings_names as names

__all__ = [
    "GATEWAY",
    "GRANIAN",
    "SERVICE",
    "SMOKE_TICKET",
    "Stack",
    "asgi_spec",
    "deploy",
    "down",
    "source_digest",
    "status",
    "status_lines",
]

GATEWAY = "gateway"
SERVICE = "service"  # the service's versioned processes are named service-<version>-<port>


class Stack:
    """Everything the toolkit manages for one environment."""

    def __init__(self, env: Environment, options: ReleaseOptions | None = None) -> None:
        self.env = env
        self.procs = ProcessManager(env.state_dir)
        self.options = options or ReleaseOptions()

    @cached_property
    def runtime(self) -> ServerRuntime:
        return runtime_for(self.env, self.procs)

    @property
    def admin(self) -> AdminClient:
        return self.release.admin

    @property
    def ingress(self) -> IngressClient:
        return self.release.ingress

    @cached_property
    def release(self) -> Release:
        """The service's versions: facts, plan, and the deploy steps that act on them."""
        return Release(self.env, self.procs, self.service_env, self.options)

    @property
    def version(self) -> str:
        """The service version the working tree would run here."""
        return self.release.version

    # --- process specs -------------------------------------------------------------

    def gateway_spec(self) -> ProcessSpec:
        return asgi_spec(
            GATEWAY,
            "ops.programs.mock_gateway:app",
            self.env.gateway,
            self.env.root,
            sources=self.env.root / "ops" / "programs" / "mock_gateway.py",
            env={
                "GATEWAY_LATENCY_MS": f"{self.env.settings.gateway.latency_ms:g}",
                "GATEWAY_JOURNAL": str(self.env.state_dir / "gateway" / "journal.jsonl"),
            },
        )

    def service_env(self) -> dict[str, str]:
        """Settings the service process reads (see `service.config`)."""
        values = {
            names.GATEWAY_URL: self.env.gateway.url,
            names.HOLD_SECONDS: f"{self.env.settings.service.hold_seconds:g}",
            names.MAIL_OUTBOX: str(self.outbox),
        }
        kid = self.identity_key()
        if kid:
            values[names.IDENTITY_KEYS] = kid
        return values

    @property
    def signing_dir(self) -> Path:
        return signing_dir(self.env.state_dir)

    @property
    def local_signing(self) -> bool:
        """The toolkit makes the key pair (local runtimes) rather than reading it."""
        return self.env.runtime != "external"

    def identity_key(self) -> str | None:
        """The public key the service accepts requests from, when signing is on."""
        if not self.env.settings.service.signing:
            return None
        if self.local_signing:
            kid_file = self.signing_dir / "public.txt"
            return kid_file.read_text().strip() if kid_file.is_file() else None
        variable = self.env.settings.service.identity_key_env or "RESTATE_IDENTITY_KEY"
        return self.env.require_secret(variable, "request signing needs the server's public key")

    def signing_step(self, ctx: StepContext) -> Result:
        """An ed25519 key pair for local servers; the public key id for Cloud."""
        if not self.env.settings.service.signing:
            return Result.skipped("request signing off")
        if not self.local_signing:
            kid = self.identity_key()
            return Result.ok(f"service accepts calls signed by {kid}")
        private = private_key_file(self.signing_dir)
        if private.is_file():
            if ctx.check:  # read only: ensure_key_pair would rewrite public.txt
                return Result.ok(f"key pair present ({read_key_id(private)})")
            _, kid, _ = ensure_key_pair(self.signing_dir)
            return Result.ok(f"key pair present ({kid})")
        if ctx.check:
            return Result.changed(f"would generate an ed25519 key pair in {self.signing_dir}")
        _, kid, _ = ensure_key_pair(self.signing_dir)
        return Result.changed(f"generated key pair {kid} in {self.signing_dir}")

    @property
    def outbox(self) -> str:
        return str(self.env.state_dir / "outbox")

    def service_instance(self) -> Instance:
        """The service process new invocations reach (the active version's instance);
        for fault injection and tests. Fails when no version of ours is registered."""
        instance = self.release.active_instance()
        if instance is None:
            raise NexusError(f"no service version of {self.env.name} is registered")
        return instance

    def service_spec(self) -> ProcessSpec:
        """How the active version's process runs (see `ops.release.release`)."""
        return self.release.spec(self.service_instance())

    # --- deploy steps ---------------------------------------------------------------

    def gateway_step(self, ctx: StepContext) -> Result:
        if self.env.gateway_mode != "mock":
            return Result.skipped(f"external payment gateway at {self.env.gateway.url}")
        if not ctx.check:
            (self.env.state_dir / "gateway").mkdir(parents=True, exist_ok=True)
        return ensure_process(self.procs, self.gateway_spec(), ctx)

    def upgrade_steps(self) -> list[tuple[str, StepFn]]:
        """The data's marker read before the server step may stop anything (own servers)."""
        if self.env.runtime not in ("binary", "docker", "cluster"):
            return []
        options = self.options
        check = rollback_check(self.env, allow_resharding=options.allow_resharding)
        step = upgrade_step(self.env, allow_downgrade=options.allow_downgrade, rollback_check=check)
        return [("upgrade", step)]

    def deploy_steps(self) -> list[tuple[str, StepFn]]:
        signing = [("signing", self.signing_step)] if self.env.settings.service.signing else []
        return [
            *signing,
            *self.upgrade_steps(),
            *self.runtime.deploy_steps(),
            ("gateway", self.gateway_step),
            ("artefact", self.release.artefact_step),
            ("service", self.release.service_step),
            ("registration", self.release.registration_step),
            ("smoke", self.release.smoke_step),
            ("retire", self.release.retire_step),
        ]

    def down_steps(self, purge: bool) -> list[tuple[str, StepFn]]:
        containers = self.release.containers.known() if self.env.service_mode == "container" else {}
        steps_c = [(n, self._container_stop_step(n)) for n in sorted(containers)]
        known = self.procs.known()
        versions = [n for n in known if Instance.parse(n) is not None or n == SERVICE]
        extra = [n for n in known if n not in (*versions, GATEWAY, *self.runtime.processes())]
        steps: list[tuple[str, StepFn]] = [(n, stop_step(self.procs, n)) for n in extra]
        steps += [(n, stop_step(self.procs, n)) for n in versions]
        steps += steps_c
        steps.append(("gateway", stop_step(self.procs, GATEWAY)))
        steps += self.runtime.down_steps(purge)
        if purge:
            steps.append(("purge", self.purge_step))
        return steps

    def _container_stop_step(self, name: str) -> StepFn:
        """A down step: stop and remove one version's container."""

        def step(ctx: StepContext) -> Result:
            what = self.release.containers.describe(name)
            if what["container"] is None:
                return Result.ok(f"{name} has no container")
            if ctx.check:
                return Result.changed(f"would remove container {what['container']} of {name}")
            self.release.containers.stop(name)
            return Result.changed(
                f"removed container {what['container']} of {name}", [f"{name}: running → removed"]
            )

        return step

    def purge_step(self, ctx: StepContext) -> Result:
        state = self.env.state_dir
        if not state.exists():
            return Result.ok(f"{state} already absent")
        if ctx.check:
            return Result.changed(f"would delete {state}")
        shutil.rmtree(state)
        return Result.changed(f"deleted {state} (data, logs, outbox, gateway journal)")


def deploy(
    env: Environment,
    *,
    check: bool = False,
    diff: bool = False,
    out: TextIO | None = None,
    options: ReleaseOptions | None = None,
) -> Play:
    """Converge server → gateway → service version → registration → smoke call → retire
    what has drained."""
    stack = Stack(env, options)
    return _play(f"deploy {env.name}", stack.deploy_steps(), check, diff, out)


def down(
    env: Environment, *, purge: bool = False, check: bool = False, out: TextIO | None = None
) -> Play:
    """Stop everything deploy started; `purge` also deletes the state folder."""
    return _play(f"down {env.name}", Stack(env).down_steps(purge), check, False, out)


def _play(
    title: str, steps: list[tuple[str, StepFn]], check: bool, diff: bool, out: TextIO | None
) -> Play:
    play = Play(title, StepContext(check=check, show_diff=diff), out=out or sys.stdout)
    for name, fn in steps:
        play.run(name, fn)
    play.recap()
    return play


def status(env: Environment) -> dict[str, Any]:
    """What `invoke status` reports, as data (`--json` prints it): the server, each
    service version, open and stuck invocations, services, the runtime's own lines
    (cluster nodes, container) and the managed processes."""
    stack = Stack(env)
    report: dict[str, Any] = {
        "environment": env.name,
        "file": str(env.file),
        "runtime": env.runtime,
        "server": {"healthy": False, "version": None, "admin": env.admin.url,
                   "ingress": env.ingress.url, "error": None},
        "working_tree_version": None,
        "versions": [],
        "invocations": None,
        "services": [],
    }  # fmt: skip
    try:
        healthy = stack.admin.healthy()
        report["server"]["healthy"] = healthy
        if healthy:
            report["server"]["version"] = stack.admin.version().get("version", "?")
            report["working_tree_version"] = stack.version
            report["versions"] = stack.release.status()
            opened = open_invocations(stack.admin)
            stuck = sum(i.stuck_reason() is not None for i in opened)
            report["invocations"] = {"open": len(opened), "stuck": stuck}
            report["services"] = [
                {
                    "name": svc["name"],
                    "type": svc.get("ty", ""),
                    "revision": svc.get("revision"),
                    "deployment": svc.get("deployment_id", ""),
                    "handlers": sorted(h["name"] for h in svc.get("handlers", [])),
                }
                for svc in sorted(stack.admin.services(), key=lambda s: s["name"])
            ]
    except NexusError as exc:
        report["server"]["error"] = str(exc)
    report["data_markers"] = _data_markers(env)
    runtime_lines = getattr(stack.runtime, "status_lines", None)
    report["runtime_lines"] = runtime_lines() if callable(runtime_lines) else []
    report["processes"] = [_process(stack, name) for name in stack.procs.known()]
    return report


def _data_markers(env: Environment) -> list[dict[str, str]] | str:
    """Each node's data marker: the versions that wrote its data and may open it."""
    try:
        return [marker.record() for marker in markers(env.state_dir)]
    except NexusError as exc:
        return str(exc)


def _process(stack: Stack, name: str) -> dict[str, Any]:
    env = stack.env
    instance = Instance.parse(name)
    address = ""
    if instance is not None and instance.port is not None:
        address = f"{env.service.host}:{instance.port}"
    elif name == GATEWAY and env.gateway_mode == "mock":
        address = env.gateway.bind
    info = stack.procs.info(name)
    return {"name": name, "running": info.alive, "pid": info.pid, "address": address,
            "log": str(info.log)}  # fmt: skip


def status_lines(env: Environment) -> list[str]:
    """`status` as text: server health, versions, invocations, services, processes."""
    report = status(env)
    server = report["server"]
    lines = [f"environment {report['environment']} ({report['file']})",
             f"  runtime     {report['runtime']}"]  # fmt: skip
    if server["error"]:
        lines.append(f"  server      unreachable: {server['error']}")
    else:
        lines.append(
            f"  server      {'healthy' if server['healthy'] else 'DOWN'}"
            f" {server['version'] or '-'}  admin {server['admin']}  ingress {server['ingress']}"
        )
    data = report["data_markers"]
    if isinstance(data, str):
        lines.append(f"  data        {data}")
    for marker in data if isinstance(data, list) else []:
        lines.append(
            f"  data        {marker['node']}: written by {marker['current_version']}"
            f" (newest {marker['max_version']}), opens with"
            f" >= {marker['min_forward_compatible_version']}"
        )
    if server["healthy"] and not server["error"]:
        lines += version_lines(report["versions"], report["working_tree_version"])
        counts = report["invocations"]
        lines.append(
            f"invocations {counts['open']} open, {counts['stuck']} stuck"
            + ("  (see `invoke invocations`)" if counts["stuck"] else "")
        )
        lines.append("services")
        for svc in report["services"]:
            lines.append(
                f"  {svc['name']:<12} {svc['type']:<14} rev {svc['revision']}"
                f"  {svc['deployment']}  [{', '.join(svc['handlers'])}]"
            )
    lines += report["runtime_lines"]
    lines.append("processes")
    for proc in report["processes"]:
        state = "running" if proc["running"] else "stopped"
        lines.append(
            f"  {proc['name']:<26} {state:<8} pid {proc['pid']}  {proc['address']}"
            f"  log {proc['log']}"
        )
    if not report["processes"]:
        lines.append("  (none managed here)")
    return lines
