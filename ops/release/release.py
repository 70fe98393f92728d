"""The service's side of deploy: versioned instances, registration, smoke call, drain and
retire (the decisions are `ops.release.rollout.decide`; this module reads facts and acts).

Each version is an artefact (`ops.release.artefacts`: a wheel named after the version id and
the lock of its dependencies; on Docker also an image), built once by the artefact step
and run by every runtime: in process (and connect) mode as its own process
`service-<version>-<port>` on the version's own virtualenv, made from that wheel and lock
(never the toolkit's Python); in container mode as a container of the version's image
(`ops.release.service_containers`). Each runs on a port of the environment's range and is
registered as a deployment of its own (`force: false`, metadata: version, commit,
environment). The previous deployment keeps serving what is pinned to it until nothing
unfinished is left; then its process or container stops and its deployment is removed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ops.base.environments import Environment
from ops.base.errors import ApiError, NexusError, NotConverged
from ops.base.processes import ProcessManager, port_free
from ops.base.steps import Result, Status, StepContext
from ops.clients.admin import AdminClient, IngressClient, json_of, signature, signature_diff
from ops.clients.invocations import pinned_deployment, unfinished_by_deployment
from ops.release.artefacts import Artefact, ArtefactError
from ops.release.images import BASE_IMAGE, build_base, build_service_image, image_id, image_tag
from ops.release.instances import VersionInstances
from ops.release.rollout import Deployment, Facts, Plan, breaking_changes, decide, newest
from ops.release.versions import (
    META_COMMIT,
    META_ENV,
    META_VERSION,
    Instance,
    git_commit,
    remove_snapshot,
    version_id,
)

LEGACY_SERVICE = "service"  # the one unversioned process of toolkits before versions
SMOKE_TICKET = "nexus-smoke:seat-0"
DRAIN_POLL_S = 0.5
SQL_WARMUP_S = 30.0  # how long a freshly started server may refuse SQL on its partitions


@dataclass(frozen=True)
class ReleaseOptions:
    """What `invoke deploy` may be told about a release."""

    drain_timeout: float = 0.0  # wait this long for older versions to drain, then go on
    allow_breaking: bool = False  # register a version that removes or retypes handlers
    service_url: str = ""  # url mode: the endpoint of this version (else [service] url)
    sources: Path | None = None  # the service package to release (else the working tree's)
    allow_downgrade: bool = False  # a restate-server rollback that the data's marker allows
    allow_resharding: bool = False  # a rollback to 1.6 that forgets earlier Idempotency-Keys


class Release(VersionInstances):
    """Versions of the service for one environment: facts, plan, and the steps."""

    def __init__(
        self,
        env: Environment,
        procs: ProcessManager,
        settings: Callable[[], Mapping[str, str]],
        options: ReleaseOptions | None = None,
    ) -> None:
        super().__init__(env, procs, settings)
        self.options = options or ReleaseOptions()

    @cached_property
    def admin(self) -> AdminClient:
        return AdminClient(self.env.admin.url, self.env.token)

    @cached_property
    def ingress(self) -> IngressClient:
        return IngressClient(self.env.ingress.url, self.env.token)

    # --- identity --------------------------------------------------------------------

    @property
    def package(self) -> Path:
        """The `service` package this release runs."""
        return self.options.sources or self.env.root / "service"

    @cached_property
    def version(self) -> str:
        """The version the sources would run as, with this environment's settings."""
        return version_id(self.package, self.settings)

    @property
    def artefact(self) -> Artefact:
        """The artefact of the version these sources make."""
        return self.artefacts.artefact(self.version)

    @property
    def url(self) -> str:
        """url mode: this version's endpoint (`{version}` filled in)."""
        raw = self.options.service_url or self.env.settings.service.url
        return raw.replace("{version}", self.version).rstrip("/")

    def metadata(self) -> dict[str, str]:
        meta = {META_VERSION: self.version, META_ENV: self.env.name}
        commit = git_commit(self.env.root)
        if commit:
            meta[META_COMMIT] = commit
        return meta

    def active_instance(self) -> Instance | None:
        """The instance behind the newest deployment (where new invocations go)."""
        active = newest(self.deployments())
        return active.instance if active else None

    # --- facts -----------------------------------------------------------------------

    def deployments(self) -> list[Deployment]:
        """This environment's deployments, with the unfinished work pinned to each."""
        unfinished = self._unfinished()
        now = datetime.now(UTC)
        found: list[Deployment] = []
        for raw in self.admin.deployments():
            uri = str(raw.get("uri") or raw.get("arn") or "")
            meta = raw.get("metadata") or {}
            if not self._ours(uri, meta):
                continue
            version = meta.get(META_VERSION)
            count, oldest = unfinished.get(str(raw["id"]), (0, ""))
            found.append(
                Deployment(
                    id=str(raw["id"]),
                    uri=uri,
                    created_at=str(raw.get("created_at", "")),
                    version=str(version) if version else None,
                    instance=self._instance_of(uri, version),
                    unfinished=count,
                    oldest_s=_age(oldest, now) if count else None,
                )
            )
        return found

    def _unfinished(self) -> dict[str, tuple[int, str]]:
        """Unfinished invocations per deployment. A server that has just (re)started
        answers health checks before its partitions can be queried ("node lookup for
        partition 0 failed"): that answer is waited out for a bounded time."""
        deadline = time.monotonic() + SQL_WARMUP_S
        while True:
            try:
                return unfinished_by_deployment(self.admin)
            except ApiError as exc:
                starting = exc.status == 500 and "partition" in exc.message
                if not starting or time.monotonic() > deadline:
                    raise
            time.sleep(0.5)

    def _ours(self, uri: str, meta: Mapping[str, Any]) -> bool:
        """Registered by this environment (its metadata says so), or at the endpoint this
        release would register (before versions, or by another environment naming the
        same endpoint: Restate keeps one deployment per URI)."""
        if meta.get(META_ENV) == self.env.name:
            return True
        if self.mode == "url":
            return uri.rstrip("/") == self.url
        if self.mode == "connect":
            return uri.startswith(f"connect://{self.env.settings.service.connect_name}")
        # Registered before versions: the service URL itself.
        return uri.rstrip("/") == self.env.service.url

    def _instance_of(self, uri: str, version: Any) -> Instance | None:
        if self.mode == "url" or not version:
            return None
        if self.mode == "connect":
            return Instance(str(version), None)
        parts = urlsplit(uri)
        if parts.hostname != self.env.service.host or parts.port is None:
            return None
        return Instance(str(version), parts.port)

    def facts(self, registered: bool = True) -> Facts:
        """What runs and what is registered (`registered=False`: skip the admin API)."""
        alive, known = self.instances()
        host = self.env.service.host
        ports = self.env.service_ports if self.mode in ("process", "container") else []
        free = [p for p in ports if port_free(host, p)]
        return Facts(
            version=self.version,
            deployments=self.deployments() if registered else [],
            alive=alive,
            known=known,
            free_ports=free,
            uri=self.url if self.mode == "url" else None,
            tunnel=self.mode == "connect",
        )

    def plan(self, registered: bool = True) -> Plan:
        return decide(self.facts(registered))

    # --- steps -----------------------------------------------------------------------

    def artefact_step(self, ctx: StepContext) -> Result:
        """The version's artefact exists (wheel and lock; in container mode its image):
        ok; otherwise build it → changed. Deploy runs what this step finds or makes."""
        if self.mode == "url":
            return Result.skipped(f"service hosted at {self.url}: `invoke build --push` ships it")
        artefact = self.artefact
        done: list[str] = []
        if not artefact.present():
            if ctx.check:
                return Result.changed(f"would build version {self.version}'s wheel and lock")
            self.artefacts.build(self.package, self.version, self.build_metadata())
            done.append(f"built {artefact.wheel.name}")
        if self.mode == "container":
            tag = image_tag(self.version)
            if image_id(tag) is None:
                if ctx.check:
                    return Result.changed(f"would build image {tag}")
                if image_id(BASE_IMAGE) is None:
                    build_base()
                    done.append(f"built base image {BASE_IMAGE}")
                built, took = build_service_image(self.artefacts, artefact)
                done.append(f"built image {tag} ({built[7:19]}, {took:.1f}s)")
        if done:
            return Result.changed(f"version {self.version}: " + "; ".join(done))
        image = f", image {image_tag(self.version)}" if self.mode == "container" else ""
        return Result.ok(f"version {self.version}: {artefact.wheel.name}{image} present")

    def build_metadata(self) -> dict[str, str]:
        meta = {"env": self.env.name}
        commit = git_commit(self.env.root)
        if commit:
            meta["commit"] = commit
        return meta

    def service_step(self, ctx: StepContext) -> Result:
        """The wanted version runs (a new instance beside the old ones when it changed);
        every instance that must drain runs too."""
        if self.mode == "url":
            return Result.skipped(f"service hosted at {self.url} (version {self.version})")
        if self.mode == "connect":
            key_var = self.env.settings.service.connect_key_env
            self.env.require_secret(key_var, "service mode connect needs a connect key")
        up = self.admin.healthy()
        if not up and not ctx.check:
            raise ApiError(f"admin API at {self.env.admin.url} is not healthy")
        plan = self.plan(registered=up)  # a server not running yet has nothing registered
        if plan.refused:
            raise NexusError(plan.refused)
        lines: list[str] = []
        done: list[str] = []
        for instance in plan.restart:
            self._require_artefact(instance)
            if ctx.check:
                done.append(f"would restart {instance.name} (it must run to drain or serve)")
                continue
            result = self.ensure_instance(instance, ctx)
            done.append(result.message)
            lines += result.diff
        if plan.start is not None:
            new = plan.start
            was = f" beside {plan.active.version or 'an unversioned one'}" if plan.active else ""
            if ctx.check:
                done.append(f"would start version {new.version} as {new.name}{was}")
                lines.append(f"{new.name}: stopped → running")
            else:
                result = self.ensure_instance(new, ctx)
                done.append(f"started version {new.version} as {new.name}{was}")
                lines += result.diff
        if done:
            return Result.changed("; ".join(done), lines)
        active = plan.active
        if active is not None and active.instance is not None:
            current = self.ensure_instance(active.instance, ctx)
            if current.status is not Status.OK:  # same version, other settings: same code
                return current
            return Result.ok(f"version {self.version}: {current.message}")
        return Result.ok(f"version {self.version} running")

    def _require_artefact(self, instance: Instance) -> None:
        """What a stopped instance needs to run again is there: its image (container
        mode), or its virtualenv or the artefact to make it from (process modes)."""
        if self.mode == "container":
            if image_id(image_tag(instance.version)) is None:
                raise ArtefactError(self._missing(instance, f"image {image_tag(instance.version)}"))
            return
        venv = self.venv(instance.version)
        if not (venv / "bin" / "python").exists() and not self._artefact_of(instance).present():
            raise ArtefactError(
                self._missing(instance, f"its artefact {self._artefact_of(instance).home}")
            )

    def registration_step(self, ctx: StepContext) -> Result:
        """The wanted version is the newest deployment (registered without `force`)."""
        if not self.admin.healthy():
            if ctx.check:
                return Result.changed(f"would register version {self.version} (server down)")
            raise ApiError(f"admin API at {self.env.admin.url} is not healthy")
        plan = self.plan()
        if plan.refused:
            raise NexusError(plan.refused)
        target_uri = plan.register_uri
        instance = plan.register
        if instance is not None:
            if ctx.check and (instance not in self.instances()[0]):
                return Result.changed(
                    f"would register version {self.version} once {instance.name} runs"
                )
            target_uri = self.uri(instance)
        active = plan.active
        if target_uri is None:
            if active is None:
                raise NotConverged("no deployment registered and nothing to register")
            return Result.ok(
                f"version {self.version} is the active deployment {active.id}"
                f" ({self._revisions(active.id)})"
            )
        try:
            offered = signature(self.admin.discover(target_uri)["services"])
        except ApiError as exc:
            raise ApiError(f"discovery of {target_uri} failed: {exc.message}") from None
        before = self._services(active.id) if active is not None else {}
        diff = signature_diff(before, offered)
        breaking = breaking_changes(before, offered)
        if breaking and not self.options.allow_breaking:
            if instance is not None and not ctx.check:
                self.stop_instance(instance.name)  # refused: leave nothing of it running
                remove_snapshot(self.versions_dir, instance.version)
            raise NexusError(
                f"version {self.version} is not compatible with the active one"
                f" ({'; '.join(breaking)}): deploy again with --allow-breaking to register"
                " it (in-flight invocations still drain on the old version)"
            )
        if ctx.check:
            return Result.changed(f"would register version {self.version} at {target_uri}", diff)
        registered = self.admin.register(
            target_uri,
            force=False,
            dry_run=False,
            breaking=bool(breaking),
            metadata=self.metadata(),
        )
        now_active = newest(self.deployments())
        if now_active is None or now_active.id != registered.get("id"):
            raise NotConverged(
                f"registered {target_uri}, but the newest deployment is"
                f" {now_active.id if now_active else 'none'}, not {registered.get('id')}"
            )
        if self._services(now_active.id) != offered:
            raise NotConverged(f"{now_active.id} does not show the services {target_uri} offers")
        was = f"; {active.id} ({active.version or 'unversioned'}) drains" if active else ""
        return Result.changed(
            f"registered version {self.version} at {target_uri} as {now_active.id}{was}", diff
        )

    def _services(self, deployment_id: str) -> dict[str, dict[str, Any]]:
        return signature(self.admin.deployment(deployment_id)["services"])

    def _revisions(self, deployment_id: str) -> str:
        found = self.admin.deployment(deployment_id)["services"]
        return ", ".join(f"{s['name']}@{s['revision']}" for s in found)

    def smoke_step(self, ctx: StepContext) -> Result:
        """A read-only call through the ingress reaches the active deployment."""
        if ctx.check and ctx.would_change:
            return Result.skipped(f"would run after the changes of: {', '.join(ctx.would_change)}")
        if ctx.check and not self.admin.healthy():
            return Result.skipped("server not running yet")
        active = newest(self.deployments())
        started = time.monotonic()
        deadline = started + 20
        key = f"nexus-smoke-{uuid.uuid4().hex}"
        while True:
            resp = self.ingress.call(
                "Ticket", "get", key=SMOKE_TICKET, timeout=10, headers={"Idempotency-Key": key}
            )
            if resp.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)  # a fresh registration takes a moment to reach the ingress
        if resp.status_code != 200 or "status" not in (json_of(resp, "smoke call") or {}):
            raise ApiError(
                f"Ticket/get through {self.env.ingress.url} answered"
                f" {resp.status_code}: {resp.text[:300]}"
            )
        took = (time.monotonic() - started) * 1000
        invocation = resp.headers.get("x-restate-id", "")
        reached = pinned_deployment(self.admin, invocation) if invocation else None
        if active is not None and reached is not None and reached != active.id:
            raise NotConverged(
                f"the smoke call ran on {reached}, not on the active deployment {active.id}"
            )
        where = f" on {reached} (version {active.version})" if reached and active else ""
        return Result.ok(
            f"Ticket/{SMOKE_TICKET}/get → {resp.json()['status']} in {took:.0f} ms{where}"
        )

    def retire_step(self, ctx: StepContext) -> Result:
        """Older versions drain; whatever has drained is stopped and deregistered."""
        if ctx.check and not self.admin.healthy():
            return Result.skipped("server not running yet")
        plan = self.plan()
        deadline = time.monotonic() + (0.0 if ctx.check else self.options.drain_timeout)
        while plan.draining and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL_S)
            plan = self.plan()
        done: list[str] = []
        lines: list[str] = []
        for dep in plan.retire:
            what = f"version {dep.version or 'unversioned'} ({dep.id}, {dep.uri.rstrip('/')})"
            if ctx.check:
                done.append(f"would retire drained {what}")
                continue
            name = (
                dep.instance.name
                if dep.instance
                else (LEGACY_SERVICE if self.mode == "process" and dep.version is None else None)
            )
            if name is not None and dep.instance is not None:
                self.stop_instance(name)
            elif name is not None:
                self.procs.stop(name)
            self.admin.delete_deployment(dep.id)
            if dep.version and dep.version != self.version:
                remove_snapshot(self.versions_dir, dep.version)
            hosted = "; it may be shut down now" if self.mode == "url" else ""
            done.append(f"retired drained {what}{hosted}")
            lines.append(f"{dep.id}: draining → removed")
        for instance in plan.stop:
            if ctx.check:
                done.append(f"would stop {instance.name} (no deployment uses it)")
                continue
            self.stop_instance(instance.name)
            done.append(f"stopped {instance.name} (no deployment uses it)")
        if not ctx.check and plan.retire:
            left = {d.id for d in self.deployments()} & {d.id for d in plan.retire}
            if left:
                raise NotConverged(f"deployments still registered after removal: {sorted(left)}")
        waiting = "; ".join(_draining(d) for d in plan.draining)
        if done:
            text = "; ".join(done) + (f"; still draining: {waiting}" if waiting else "")
            return Result.changed(text, lines)
        if waiting:
            return Result.ok(f"draining: {waiting}")
        return Result.ok("no older version left")

    # --- status ----------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """Each version, newest first: deployment, URI, process, and `active`, `draining`
        (with its unfinished work) or `drained` (retired by the next deploy)."""
        deployments = sorted(self.deployments(), key=lambda d: d.created_at, reverse=True)
        rows: list[dict[str, Any]] = []
        for i, dep in enumerate(deployments):
            state = "active" if i == 0 else "draining" if dep.unfinished else "drained"
            info = self.describe_instance(dep.instance.name) if dep.instance else None
            rows.append(
                {
                    "version": dep.version,
                    "deployment": dep.id,
                    "uri": dep.uri.rstrip("/"),
                    "state": state,
                    "unfinished": dep.unfinished,
                    "oldest_s": None if dep.oldest_s is None else round(dep.oldest_s, 1),
                    "process": dep.instance.name if dep.instance is not None else None,
                    "pid": info["pid"] if info is not None else None,
                    "running": info["running"] if info is not None else None,
                    **(
                        {"container": info["container"], "image": info["image"]}
                        if info is not None and "container" in info
                        else {}
                    ),
                    **({"python": info["python"]} if info and "python" in info else {}),
                }
            )
        return rows


def version_lines(rows: list[dict[str, Any]], wanted: str) -> list[str]:
    """`Release.status` as text: a line per version."""
    lines = [f"versions (working tree: {wanted})"]
    for row in rows:
        state = {
            "active": "Active",
            "drained": "Drained (retired by the next deploy)",
        }.get(row["state"], "")
        if row["state"] == "draining":
            oldest = f", oldest {row['oldest_s']:.0f}s" if row["oldest_s"] is not None else ""
            state = f"Draining ({row['unfinished']} unfinished{oldest})"
        proc = ""
        if row["process"] is not None:
            alive = "running" if row["running"] else "STOPPED"
            proc = f"  {row['process']} {alive} pid {row['pid']}"
            if row.get("container"):
                proc += f" container {row['container']} image {row['image']}"
        lines.append(
            f"  {row['version'] or 'unversioned':<10} {row['deployment']}  {row['uri']}"
            f"{proc}  {state}"
        )
    if not rows:
        lines.append("  (no deployment registered)")
    return lines


def _draining(dep: Deployment) -> str:
    oldest = f", oldest {dep.oldest_s:.0f}s" if dep.oldest_s is not None else ""
    return f"{dep.version or 'unversioned'}: {dep.unfinished} unfinished{oldest}"


def _age(stamp: str, now: datetime) -> float | None:
    try:
        then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return max(0.0, (now - then).total_seconds())
