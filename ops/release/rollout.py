"""Versioned rollouts as data: what is registered and running in, what to do out.

Restate's model, which deploy follows: every version is its own deployment behind its own
endpoint, registered without `force`; new invocations go to the newest; a superseded
deployment keeps serving the invocations pinned to it (it *drains*) and is retired (its
process stopped, its deployment removed) once none of them is unfinished. `decide` is
pure, so every case is a row in a table test; `ops.release.stack` reads the facts and acts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ops.release.versions import Instance

Signature = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Deployment:
    """One of this environment's deployments, with the work still pinned to it."""

    id: str
    uri: str
    created_at: str
    version: str | None = None  # from its metadata; None if registered before versions
    instance: Instance | None = None  # the local process behind it, if the toolkit runs it
    unfinished: int = 0  # invocations pinned to it and not completed
    oldest_s: float | None = None  # age of the oldest of those


@dataclass(frozen=True)
class Facts:
    """Everything a decision needs, read from the admin API and the PID files."""

    version: str  # the version the working tree would run now
    deployments: Sequence[Deployment] = ()  # ours, any order
    alive: frozenset[Instance] = frozenset()  # instances whose process runs
    known: frozenset[Instance] = frozenset()  # instances with a PID file, alive or not
    free_ports: Sequence[int] = ()  # ports of the range nothing holds, in order
    uri: str | None = None  # url mode: the endpoint to register; None when we run it
    tunnel: bool = False  # connect mode: an instance is a tunnel, one per version, no port


@dataclass
class Plan:
    """What deploy must do to converge, and what it found."""

    active: Deployment | None = None  # the newest deployment: new invocations go there
    current: bool = False  # the active deployment runs the wanted version
    start: Instance | None = None  # a new instance of the wanted version
    restart: list[Instance] = field(default_factory=list)  # must run, process is dead
    register: Instance | None = None  # an instance to register as the new deployment
    register_uri: str | None = None  # url mode: a new endpoint to register
    draining: list[Deployment] = field(default_factory=list)
    retire: list[Deployment] = field(default_factory=list)
    stop: list[Instance] = field(default_factory=list)  # runs, but nothing needs it
    refused: str = ""  # why deploy cannot go on

    @property
    def changes(self) -> bool:
        return bool(
            self.start
            or self.restart
            or self.register
            or self.register_uri
            or self.retire
            or self.stop
        )


def newest(deployments: Sequence[Deployment]) -> Deployment | None:
    """The deployment registered last: Restate sends new invocations there."""
    return max(deployments, key=lambda d: d.created_at, default=None)


def decide(facts: Facts) -> Plan:
    """The plan that brings the facts to "the wanted version is the active deployment,
    every older one drains on its own code, and what has drained is retired"."""
    active = newest(facts.deployments)
    plan = Plan(active=active)
    if facts.uri is not None:
        _decide_url(facts, plan)
    else:
        _decide_process(facts, plan)
    for dep in facts.deployments:
        if dep is active:
            continue
        if dep.unfinished > 0:
            plan.draining.append(dep)
            if dep.instance is not None and dep.instance not in facts.alive:
                plan.restart.append(dep.instance)  # it cannot drain while it is down
        else:
            plan.retire.append(dep)
    registered = {d.instance for d in facts.deployments if d.instance is not None}
    plan.stop = sorted(i for i in facts.alive if i not in registered and i != plan.register)
    return plan


def _decide_process(facts: Facts, plan: Plan) -> None:
    active = plan.active
    wanted = facts.version
    if active is not None and active.version == wanted and active.instance is not None:
        plan.current = True
        if active.instance not in facts.alive:
            plan.restart.append(active.instance)  # a crash: same code, same endpoint
        return
    registered = {d.instance for d in facts.deployments if d.instance is not None}
    spare = sorted(
        (i for i in facts.known if i.version == wanted and i not in registered),
        key=lambda i: (i not in facts.alive, i),
    )
    if spare:
        plan.register = spare[0]
        if spare[0] not in facts.alive:
            plan.restart.append(spare[0])
        return
    if facts.tunnel:
        plan.start = plan.register = Instance(wanted, None)
        return
    taken = {i.port for i in facts.known} | {i.port for i in registered}
    port = next((p for p in facts.free_ports if p not in taken), None)
    if port is None:
        plan.refused = (
            "no free port left in the service's port range for a new version: wait until"
            " older versions drain (deploy retires them), or widen [service] port_range"
        )
        return
    plan.start = Instance(wanted, port)
    plan.register = plan.start


def _decide_url(facts: Facts, plan: Plan) -> None:
    active = plan.active
    uri = facts.uri or ""
    if active is not None and _same_uri(active.uri, uri):
        plan.current = True
        return
    clash = next((d for d in facts.deployments if _same_uri(d.uri, uri)), None)
    if clash is not None:
        plan.refused = (
            f"{uri} is already registered as {clash.id}, an older version that is still"
            " draining; Restate would keep it and route nothing new to it. Serve this"
            " version at a URL of its own (put {version} in [service] url, or --service-url)"
        )
        return
    plan.register_uri = uri


def breaking_changes(before: Signature, after: Signature) -> list[str]:
    """What a new version takes away from callers: removed services or handlers, a
    changed service type or handler kind. Restate 1.7 refuses only a changed service
    type without `breaking`; the rest it accepts silently, so deploy asks first."""
    found: list[str] = []
    for name in sorted(before):
        if name not in after:
            found.append(f"service {name} removed")
            continue
        if before[name]["ty"] != after[name]["ty"]:
            found.append(f"service {name}: type {before[name]['ty']} → {after[name]['ty']}")
        old, new = before[name]["handlers"], after[name]["handlers"]
        for handler in sorted(old):
            if handler not in new:
                found.append(f"handler {name}/{handler} removed")
            elif old[handler][0] != new[handler][0]:
                found.append(
                    f"handler {name}/{handler}: kind {old[handler][0]} → {new[handler][0]}"
                )
    return found


def _same_uri(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")
