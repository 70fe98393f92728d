"""One environment's whole stack: server runtime, mock gateway, service, registration.

`deploy`, `down` and `status` are plays of idempotent steps over it."""

from __future__ import annotations

import hashlib
import shutil
import sys
import time
from functools import cached_property
from pathlib import Path
from typing import TextIO

from ops.admin import AdminClient, IngressClient, json_of, signature, signature_diff
from ops.environments import Endpoint, Environment
from ops.errors import ApiError, NexusError, NotConverged
from ops.processes import ProcessManager, ProcessSpec, http_ready
from ops.runtimes import ServerRuntime, ensure_process, stop_step
from ops.server_runtime import runtime_for
from ops.signing import ensure_key_pair, private_key_file, read_key_id, signing_dir
from ops.steps import Context, Play, Result, StepFn
from service import settings_names as names

GATEWAY = "gateway"
SERVICE = "service"
SMOKE_TICKET = "nexus-smoke:seat-0"
# Granian: HTTP/1.1 and HTTP/2 (h2c, which restate-server speaks) in Rust, one Python
# worker on uvloop. It cost 18% less CPU per checkout than hypercorn's pure-Python h2, and
# it never recycles connections (hypercorn dropped every 1000 requests, with all the
# invocations in flight on them). Restate opens a new connection past 128 streams.
GRANIAN = (
    "--interface", "asginl",  # no ASGI lifespan: the Restate app has none
    "--http", "auto",
    "--workers", "1",
    "--loop", "uvloop",
    "--http2-max-concurrent-streams", "1000",
    "--workers-kill-timeout", "1",
    "--log-level", "warning",
)  # fmt: skip


def source_digest(path: Path) -> str:
    """A digest of the sources (or config file) a process runs: a change means a restart."""
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else []
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path.parent).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _bind(endpoint: Endpoint) -> list[str]:
    return ["--host", endpoint.host, "--port", str(endpoint.port)]


def asgi_spec(
    name: str,
    app: str,
    endpoint: Endpoint,
    root: Path,
    *,
    sources: Path,
    env: dict[str, str] | None = None,
) -> ProcessSpec:
    """An ASGI `app` served by granian at `endpoint`; new sources restart it.

    Granian is a supervisor with one worker child; both live in the process group that
    the toolkit signals. Asked to stop, it can wait on Restate's open HTTP/2 streams, so
    it gets 3 s before SIGKILL: safe, since Restate replays whatever was in flight."""
    return ProcessSpec(
        name=name,
        argv=[sys.executable, "-m", "granian", *GRANIAN, *_bind(endpoint), app],
        cwd=root,
        ports=[(endpoint.host, endpoint.port)],
        ready=http_ready(f"{endpoint.url}/health"),
        env=env or {},
        inputs=source_digest(sources),
        stop_timeout=3.0,
    )


class Stack:
    """Everything the toolkit manages for one environment."""

    def __init__(self, env: Environment) -> None:
        self.env = env
        self.procs = ProcessManager(env.state_dir)

    @cached_property
    def runtime(self) -> ServerRuntime:
        return runtime_for(self.env, self.procs)

    @cached_property
    def admin(self) -> AdminClient:
        return AdminClient(self.env.admin.url, self.env.token)

    @cached_property
    def ingress(self) -> IngressClient:
        return IngressClient(self.env.ingress.url, self.env.token)

    @property
    def registration_uri(self) -> str:
        if self.env.service_mode == "connect":
            return f"connect://{self.env.get('service', 'connect_name')}"
        return self.env.service.url

    # --- process specs -------------------------------------------------------------

    def gateway_spec(self) -> ProcessSpec:
        return asgi_spec(
            GATEWAY,
            "ops.programs.mock_gateway:app",
            self.env.gateway,
            self.env.root,
            sources=self.env.root / "ops" / "programs" / "mock_gateway.py",
            env={
                "GATEWAY_LATENCY_MS": f"{self.env.get('gateway', 'latency_ms'):g}",
                "GATEWAY_JOURNAL": str(self.env.state_dir / "gateway" / "journal.jsonl"),
            },
        )

    def service_env(self) -> dict[str, str]:
        """Settings the service process reads (see `service.config`)."""
        values = {
            names.GATEWAY_URL: self.env.gateway.url,
            names.HOLD_SECONDS: f"{self.env.get('service', 'hold_seconds'):g}",
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
        if not self.env.get("service", "signing"):
            return None
        if self.local_signing:
            kid_file = self.signing_dir / "public.txt"
            return kid_file.read_text().strip() if kid_file.is_file() else None
        variable = str(self.env.get("service", "identity_key_env")) or "RESTATE_IDENTITY_KEY"
        return self.env.require_secret(variable, "request signing needs the server's public key")

    def signing_step(self, ctx: Context) -> Result:
        """An ed25519 key pair for local servers; the public key id for Cloud."""
        if not self.env.get("service", "signing"):
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

    def service_spec(self) -> ProcessSpec:
        if self.env.service_mode == "connect":
            return self.connect_spec()
        return asgi_spec(
            SERVICE,
            "service.app:app",
            self.env.service,
            self.env.root,
            sources=self.env.root / "service",
            env=self.service_env(),
        )

    def connect_spec(self) -> ProcessSpec:
        """`python -m restate connect`: an outbound tunnel to Restate Cloud, no port."""
        name = str(self.env.get("service", "connect_name"))
        key_var = str(self.env.get("service", "connect_key_env"))
        key = self.env.require_secret(key_var, "service mode connect needs a connect key")
        pid_file = self.procs.pid_file(SERVICE)

        def up_two_seconds() -> bool:
            """No port to probe: ready once the tunnel process has stayed up for 2 s."""
            try:
                started = pid_file.stat().st_mtime
            except OSError:
                return False
            return self.procs.info(SERVICE).alive and time.time() - started > 2.0

        return ProcessSpec(
            name=SERVICE,
            argv=[sys.executable, "-m", "restate", "connect", "service.app:app", "--name", name],
            cwd=self.env.root,
            ports=[],
            ready=up_two_seconds,
            env=self.service_env(),
            secret_env={"RESTATE_CONNECT_KEY": key},
            inputs=source_digest(self.env.root / "service"),
            stop_timeout=3.0,
        )

    # --- deploy steps ---------------------------------------------------------------

    def gateway_step(self, ctx: Context) -> Result:
        if self.env.gateway_mode != "mock":
            return Result.skipped(f"external payment gateway at {self.env.gateway.url}")
        if not ctx.check:
            (self.env.state_dir / "gateway").mkdir(parents=True, exist_ok=True)
        return ensure_process(self.procs, self.gateway_spec(), ctx)

    def service_step(self, ctx: Context) -> Result:
        if self.env.service_mode == "url":
            return Result.skipped(f"service hosted at {self.env.service.url}")
        return ensure_process(self.procs, self.service_spec(), ctx)

    def registration_step(self, ctx: Context) -> Result:
        """Register the endpoint; force re-discovery only when its services changed."""
        uri = self.registration_uri
        if not self.admin.healthy():
            if ctx.check:
                return Result.changed(f"would register {uri} (server not running yet)")
            raise ApiError(f"admin API at {self.env.admin.url} is not healthy")
        registered = self.admin.find_deployment(uri)
        if ctx.check and SERVICE in ctx.would_change:
            # The endpoint would (re)start first: what it offers then is not knowable yet.
            if registered is None:
                return Result.changed(f"would register {uri} once the service runs")
            return Result.skipped(
                f"{uri} registered as {registered['id']}; compared again once the service restarts"
            )
        try:
            offered = self.admin.discover(uri)
        except ApiError as exc:
            if ctx.check and registered is None:
                return Result.changed(f"would register {uri} (endpoint not running yet)")
            raise ApiError(f"discovery of {uri} failed: {exc.message}") from None
        want = signature(offered["services"])
        if registered is not None:
            have = signature(registered["services"])
            if have == want:
                revs = ", ".join(f"{s['name']}@{s['revision']}" for s in registered["services"])
                return Result.ok(f"{uri} registered as {registered['id']} ({revs})")
            diff = signature_diff(have, want)
            if ctx.check:
                return Result.changed(f"would re-register {uri} (services changed)", diff)
            self.admin.register(uri, force=True, dry_run=False)
            verb = "re-registered"
        else:
            diff = signature_diff({}, want)
            if ctx.check:
                return Result.changed(f"would register {uri}", diff)
            self.admin.register(uri, force=False, dry_run=False)
            verb = "registered"
        after = self.admin.find_deployment(uri)
        if after is None or signature(after["services"]) != want:
            raise NotConverged(
                f"{uri} was {verb}, but the admin API does not show the new services"
            )
        return Result.changed(f"{verb} {uri} as {after['id']}", diff)

    def smoke_step(self, ctx: Context) -> Result:
        """A read-only call through the ingress: the whole path answers."""
        if ctx.check and ctx.would_change:
            return Result.skipped(f"would run after the changes of: {', '.join(ctx.would_change)}")
        if ctx.check and not self.admin.healthy():
            return Result.skipped("server not running yet")
        started = time.monotonic()
        deadline = started + 20
        while True:
            resp = self.ingress.call("Ticket", "get", key=SMOKE_TICKET, timeout=10)
            if resp.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.3)  # a fresh registration takes a moment to reach the ingress
        if resp.status_code != 200 or "status" not in (json_of(resp, "smoke call") or {}):
            raise ApiError(
                f"Ticket/get through {self.env.ingress.url} answered"
                f" {resp.status_code}: {resp.text[:300]}"
            )
        took = (time.monotonic() - started) * 1000
        return Result.ok(f"Ticket/{SMOKE_TICKET}/get → {resp.json()['status']} in {took:.0f} ms")

    def deploy_steps(self) -> list[tuple[str, StepFn]]:
        signing = [("signing", self.signing_step)] if self.env.get("service", "signing") else []
        return [
            *signing,
            *self.runtime.deploy_steps(),
            ("gateway", self.gateway_step),
            ("service", self.service_step),
            ("registration", self.registration_step),
            ("smoke", self.smoke_step),
        ]

    def down_steps(self, purge: bool) -> list[tuple[str, StepFn]]:
        extra = [
            n for n in self.procs.known() if n not in (SERVICE, GATEWAY, *self.runtime.processes())
        ]
        steps: list[tuple[str, StepFn]] = [(n, stop_step(self.procs, n)) for n in extra]
        steps += [
            ("service", stop_step(self.procs, SERVICE)),
            ("gateway", stop_step(self.procs, GATEWAY)),
        ]
        steps += self.runtime.down_steps(purge)
        if purge:
            steps.append(("purge", self.purge_step))
        return steps

    def purge_step(self, ctx: Context) -> Result:
        state = self.env.state_dir
        if not state.exists():
            return Result.ok(f"{state} already absent")
        if ctx.check:
            return Result.changed(f"would delete {state}")
        shutil.rmtree(state)
        return Result.changed(f"deleted {state} (data, logs, outbox, gateway journal)")


def deploy(
    env: Environment, *, check: bool = False, diff: bool = False, out: TextIO | None = None
) -> Play:
    """Converge server → gateway → service → registration → smoke call."""
    return _play(f"deploy {env.name}", Stack(env).deploy_steps(), check, diff, out)


def down(
    env: Environment, *, purge: bool = False, check: bool = False, out: TextIO | None = None
) -> Play:
    """Stop everything deploy started; `purge` also deletes the state folder."""
    return _play(f"down {env.name}", Stack(env).down_steps(purge), check, False, out)


def _play(
    title: str, steps: list[tuple[str, StepFn]], check: bool, diff: bool, out: TextIO | None
) -> Play:
    play = Play(title, Context(check=check, show_diff=diff), out=out or sys.stdout)
    for name, fn in steps:
        play.run(name, fn)
    play.recap()
    return play


def status_lines(env: Environment) -> list[str]:
    """Server health, deployments, services and handlers, processes with PIDs and ports."""
    stack = Stack(env)
    lines = [f"environment {env.name} ({env.file})", f"  runtime     {env.runtime}"]
    try:
        healthy = stack.admin.healthy()
        version = stack.admin.version().get("version", "?") if healthy else "-"
        lines.append(
            f"  server      {'healthy' if healthy else 'DOWN'} {version}"
            f"  admin {env.admin.url}  ingress {env.ingress.url}"
        )
        if healthy:
            lines.append("deployments")
            for dep in stack.admin.deployments():
                svcs = ", ".join(f"{s['name']}@{s['revision']}" for s in dep.get("services", []))
                lines.append(f"  {dep['id']}  {dep.get('uri', '?')}  {svcs}")
            lines.append("services")
            for svc in sorted(stack.admin.services(), key=lambda s: s["name"]):
                handlers = ", ".join(sorted(h["name"] for h in svc.get("handlers", [])))
                lines.append(
                    f"  {svc['name']:<10} {svc.get('ty', ''):<14}"
                    f" rev {svc.get('revision')}  [{handlers}]"
                )
    except NexusError as exc:
        lines.append(f"  server      unreachable: {exc}")
    cluster_lines = getattr(stack.runtime, "status_lines", None)
    if callable(cluster_lines):
        lines += cluster_lines()
    lines.append("processes")
    ports: dict[str, str] = {}
    if env.gateway_mode == "mock":
        ports[GATEWAY] = env.gateway.bind
    if env.service_mode == "process":
        ports[SERVICE] = env.service.bind
    for name in stack.procs.known():
        info = stack.procs.info(name)
        state = "running" if info.alive else "stopped"
        lines.append(
            f"  {name:<15} {state:<8} pid {info.pid}  {ports.get(name, '')}  log {info.log}"
        )
    if not stack.procs.known():
        lines.append("  (none managed here)")
    return lines
