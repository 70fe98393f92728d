"""What every chaos scenario stands on: the run's context (stack, run id, seats), small
ingress helpers, preconditions (`require_*`, which skip a scenario that cannot apply),
and the restart of a process a scenario killed."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, TextIO

from ops.base.environments import Environment
from ops.base.errors import ApiError, NexusError
from ops.base.ids import fresh_seat, new_run_id
from ops.base.steps import StepContext
from ops.clients.admin import AdminClient, GatewayClient, IngressClient
from ops.clients.invocations import by_idempotency_key
from ops.operations.audit import audit
from ops.release.stack import SERVICE, Stack
from ops.server.docker_runtime import DockerRuntime
from ops.server.runtimes import SERVER, BinaryRuntime, ensure_process
from ops.testing.checks import Skip, expect

CALL_TIMEOUT_S = 90.0


@dataclass
class ChaosContext:
    """One chaos run against one environment: its stack, run id and output."""

    env: Environment
    out: TextIO = field(default_factory=lambda: sys.stdout)
    run_id: str = field(default_factory=new_run_id)
    details: list[str] = field(default_factory=list)  # the last scenario's full findings

    @cached_property
    def stack(self) -> Stack:
        return Stack(self.env)

    @property
    def prefix(self) -> str:
        """Every seat of this run starts with it."""
        return f"chaos-{self.run_id}:"

    def seat(self, label: str) -> str:
        """A fresh seat id of this run."""
        return fresh_seat(self.prefix, label)

    def client(self, timeout: float = CALL_TIMEOUT_S) -> IngressClient:
        """A new ingress client (one per thread; close it)."""
        return IngressClient(self.env.ingress.url, self.env.token, timeout=timeout)

    def admin(self) -> AdminClient:
        return AdminClient(self.env.admin.url, self.env.token)


@dataclass
class Reply:
    """One HTTP answer, or its absence (`status` None: refused, reset or timed out)."""

    status: int | None
    text: str
    seconds: float

    @property
    def definitive(self) -> bool:
        """A result the caller can act on: not a transport error, not a 5xx."""
        return self.status is not None and self.status < 500

    def brief(self) -> str:
        return f"{self.status or 'no answer'} {self.text[:160]}"


def send(
    client: IngressClient,
    path: str,
    body: bytes | None,
    *,
    headers: Mapping[str, str] | None = None,
    content_type: str | None = "application/json",
    timeout: float = CALL_TIMEOUT_S,
) -> Reply:
    """POST `body` to an ingress path; transport failures become `Reply(None, ...)`."""
    hdrs = dict(headers or {})
    if content_type and body:
        hdrs.setdefault("Content-Type", content_type)
    started = time.monotonic()
    try:
        resp = client.request("POST", path, content=body, headers=hdrs, timeout=timeout)
    except ApiError as exc:
        return _failed(exc, started)
    return Reply(resp.status_code, resp.text, time.monotonic() - started)


def _failed(exc: ApiError, started: float) -> Reply:
    """An ApiError as an answer: TokenRejected (401/403) is one, a transport error is not."""
    return Reply(exc.status if exc.status else None, str(exc), time.monotonic() - started)


def checkout(
    client: IngressClient,
    ticket: str,
    user: str,
    *,
    method: str = "card_success",
    idempotency_key: str | None = None,
    timeout: float = CALL_TIMEOUT_S,
) -> Reply:
    """`IngressClient.checkout`, timed; transport failures become `Reply(None, ...)`."""
    started = time.monotonic()
    try:
        resp = client.checkout(
            ticket, user, method, idempotency_key=idempotency_key, timeout=timeout
        )
    except ApiError as exc:
        return _failed(exc, started)
    return Reply(resp.status_code, resp.text, time.monotonic() - started)


def ticket_state(client: IngressClient, ticket: str) -> dict[str, Any]:
    """`Ticket/get` of one seat."""
    resp = client.call("Ticket", "get", key=ticket, timeout=30)
    expect(resp.status_code == 200, f"Ticket/get {ticket} answered {resp.status_code}")
    data: dict[str, Any] = resp.json()
    return data


@contextmanager
def gateway_faults(cx: ChaosContext) -> Iterator[GatewayClient]:
    """The mock gateway, with its latency restored and any outage ended afterwards."""
    require_mock_gateway(cx)
    gw = GatewayClient(cx.env.gateway.url, timeout=10.0)
    try:
        saved = float(gw.config().get("latency_ms", 0.0))
    except NexusError:
        gw.close()
        raise
    try:
        yield gw
    finally:
        try:
            gw.configure(latency_ms=saved, outage_seconds=0)
        finally:
            gw.close()


def one_checkout(cx: ChaosContext, ticket: str, user: str) -> Reply:
    client = cx.client()
    try:
        return checkout(client, ticket, user)
    finally:
        client.close()


# --- preconditions and cleanup -----------------------------------------------------------


def require_mock_gateway(cx: ChaosContext) -> None:
    if cx.env.gateway_mode != "mock":
        raise Skip(f"needs the mock payment gateway (gateway mode is {cx.env.gateway_mode!r})")


def require_process(cx: ChaosContext, name: str) -> None:
    """A process this toolkit runs here, with a live PID file (or, for the docker
    runtime's server, a running container): ours to kill."""
    env = cx.env
    if name == SERVER and env.runtime not in ("binary", "docker"):
        raise Skip(f"killing restate-server needs runtime = binary or docker (here: {env.runtime})")
    if name == SERVER and isinstance(cx.stack.runtime, DockerRuntime):
        if not cx.stack.runtime.running():
            raise Skip(f"container {cx.stack.runtime.container} is not running: deploy first")
        return
    if name == SERVICE:
        if env.runtime == "external":
            raise Skip("the server is external: killing the service here proves nothing local")
        if env.service_mode not in ("process", "container"):
            raise Skip(f"the toolkit does not run the service (mode {env.service_mode!r})")
    if name == SERVICE and env.service_mode == "container":
        if not cx.stack.release.instance_alive(process_name(cx, name)):
            raise Skip(f"the service's container is not running: deploy {env.name} first")
        return
    try:
        info = cx.stack.procs.info(process_name(cx, name))
    except NexusError as exc:
        raise Skip(
            f"{name} is not running under the toolkit's PID files ({exc}): deploy {env.name} first"
        ) from None
    if not info.alive:
        raise Skip(f"{name} is not running under the toolkit's PID files: deploy {env.name} first")


def process_name(cx: ChaosContext, name: str) -> str:
    """The PID-file name of `name`: the service is its active version's instance."""
    return cx.stack.service_instance().name if name == SERVICE else name


def expect_audit(cx: ChaosContext, prefix: str) -> str:
    """The booking invariants over one scenario's seats; their figures."""
    report = audit(cx.env, prefix=prefix)
    expect(report.ok, "; ".join(report.violations[:5]))
    return f"audit ok ({report.checked.get('sold', 0)} sold)"


def restart(cx: ChaosContext, name: str) -> float:
    """Bring a killed process back with the toolkit's own spec; seconds it took."""
    started = time.monotonic()
    runtime = cx.stack.runtime
    if name == SERVER and isinstance(runtime, DockerRuntime):
        runtime.server(StepContext())  # recreates the killed container on the same data
        return time.monotonic() - started
    procs = cx.stack.procs
    if name == SERVICE:  # a process on its version's venv, or its container
        release = cx.stack.release
        instance = cx.stack.service_instance()
        release.stop_instance(instance.name)  # reaps it, waits for its ports
        release.ensure_instance(instance, StepContext())
        return time.monotonic() - started
    procs.stop(process_name(cx, name))  # reaps it, waits for its ports, drops the stale PID file
    if not isinstance(runtime, BinaryRuntime):
        raise NexusError(f"cannot restart restate-server of runtime {cx.env.runtime}")
    ensure_process(procs, runtime.spec(), StepContext())
    return time.monotonic() - started


def kill_server(cx: ChaosContext) -> str | None:
    """SIGKILL restate-server: `pid N` or `container NAME` (`docker kill`), None if none ran."""
    runtime = cx.stack.runtime
    if isinstance(runtime, DockerRuntime):
        return f"container {runtime.container}" if runtime.kill() else None
    pid = cx.stack.procs.kill(SERVER)
    return None if pid is None else f"pid {pid}"


def ensure_running(cx: ChaosContext, name: str) -> None:
    """Cleanup: restart `name` if a scenario left it dead."""
    runtime = cx.stack.runtime
    if name == SERVER and isinstance(runtime, DockerRuntime):
        if not runtime.running():
            restart(cx, name)
    elif name == SERVICE:
        if not cx.stack.release.instance_alive(process_name(cx, name)):
            restart(cx, name)
    elif not cx.stack.procs.info(process_name(cx, name)).alive:
        restart(cx, name)


def invocations(cx: ChaosContext, key_prefix: str) -> list[dict[str, Any]]:
    """Restate's invocations whose Idempotency-Key starts with `key_prefix`."""
    admin = cx.admin()
    try:
        return by_idempotency_key(admin, prefix=key_prefix)
    finally:
        admin.close()


def epoch(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 time as Restate's SQL prints it."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


Scenario = Callable[[ChaosContext], str]
