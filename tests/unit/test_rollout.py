"""The rollout decision as data: facts in, a plan out, one row per case (in the way
pyinfra tests its operations), plus version identity and snapshots."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ops.release.rollout import Deployment, Facts, Plan, breaking_changes, decide
from ops.release.versions import Instance, remove_snapshot, snapshot, version_id

OLD, NEW = "a" * 10, "b" * 10
I_OLD, I_NEW, I_NEW2 = Instance(OLD, 9080), Instance(NEW, 9082), Instance(NEW, 9083)


def dep(
    ident: str, inst: Instance | None, at: str, unfinished: int = 0, uri: str = ""
) -> Deployment:
    version = inst.version if inst else None
    return Deployment(
        ident, uri or f"http://127.0.0.1:{inst.port if inst else 9080}/", at, version, inst,
        unfinished,
    )  # fmt: skip


@dataclass
class Case:
    facts: Facts
    start: Instance | None = None
    register: Instance | None = None
    register_uri: str | None = None
    restart: list[Instance] = field(default_factory=list)
    retire: list[str] = field(default_factory=list)
    draining: list[str] = field(default_factory=list)
    stop: list[Instance] = field(default_factory=list)
    current: bool = False
    refused: str = ""


PORTS = (9080, 9082, 9083, 9084)
CASES: dict[str, Case] = {
    "fresh: start the version on the first free port and register it": Case(
        Facts(NEW, free_ports=PORTS),
        start=Instance(NEW, 9080),
        register=Instance(NEW, 9080),
    ),
    "nothing changed: the active deployment runs the wanted version": Case(
        Facts(NEW, [dep("dp_new", I_NEW, "2")], frozenset({I_NEW}), frozenset({I_NEW}), PORTS),
        current=True,
    ),
    "crash: the active version's process is dead, restart it in place": Case(
        Facts(NEW, [dep("dp_new", I_NEW, "2")], frozenset(), frozenset({I_NEW}), PORTS),
        restart=[I_NEW],
        current=True,
    ),
    "new code: a new instance beside the old one, never in its place": Case(
        Facts(NEW, [dep("dp_old", I_OLD, "1", 5)], frozenset({I_OLD}), frozenset({I_OLD}), PORTS),
        start=I_NEW,
        register=I_NEW,  # dp_old stays active (not draining) until the new one is registered
    ),
    "switched: the old deployment still has work pinned to it, it drains": Case(
        Facts(
            NEW,
            [dep("dp_old", I_OLD, "1", 3), dep("dp_new", I_NEW, "2")],
            frozenset({I_OLD, I_NEW}),
            frozenset({I_OLD, I_NEW}),
            PORTS,
        ),
        current=True,
        draining=["dp_old"],
    ),
    "drained: the old deployment is retired": Case(
        Facts(
            NEW,
            [dep("dp_old", I_OLD, "1", 0), dep("dp_new", I_NEW, "2")],
            frozenset({I_OLD, I_NEW}),
            frozenset({I_OLD, I_NEW}),
            PORTS,
        ),
        current=True,
        retire=["dp_old"],
    ),
    "a draining version whose process died is restarted, or it never drains": Case(
        Facts(
            NEW,
            [dep("dp_old", I_OLD, "1", 2), dep("dp_new", I_NEW, "2")],
            frozenset({I_NEW}),
            frozenset({I_OLD, I_NEW}),
            PORTS,
        ),
        current=True,
        draining=["dp_old"],
        restart=[I_OLD],
    ),
    "an instance started but not registered (a failed deploy) is registered": Case(
        Facts(
            NEW,
            [dep("dp_old", I_OLD, "1")],
            frozenset({I_OLD, I_NEW}),
            frozenset({I_OLD, I_NEW}),
            PORTS,
        ),
        register=I_NEW,
    ),
    "rollback while the earlier version still drains: a new instance, new endpoint": Case(
        Facts(
            OLD,
            [dep("dp_old", I_OLD, "1", 1), dep("dp_new", I_NEW, "2")],
            frozenset({I_OLD, I_NEW}),
            frozenset({I_OLD, I_NEW}),
            PORTS,
        ),
        start=Instance(OLD, 9083),
        register=Instance(OLD, 9083),
        draining=["dp_old"],
    ),
    "an instance nothing registers is stopped": Case(
        Facts(
            NEW,
            [dep("dp_new", I_NEW, "2")],
            frozenset({I_NEW, I_NEW2}),
            frozenset({I_NEW, I_NEW2}),
            PORTS,
        ),
        current=True,
        stop=[I_NEW2],
    ),
    "no free port left: refused, nothing started": Case(
        Facts(NEW, [dep("dp_old", I_OLD, "1", 1)], frozenset({I_OLD}), frozenset({I_OLD}), ()),
        refused="no free port",
    ),
    "registered before versions (no metadata): the new version replaces it": Case(
        Facts(NEW, [dep("dp_legacy", None, "1", 0)], free_ports=(9082,)),
        start=I_NEW,
        register=I_NEW,
    ),
    "connect mode: one tunnel per version, no port": Case(
        Facts(NEW, [dep("dp_old", Instance(OLD, None), "1", 1, "connect://n-a")], tunnel=True),
        start=Instance(NEW, None),
        register=Instance(NEW, None),
    ),
    "url mode: a new URL is a new deployment": Case(
        Facts(NEW, [dep("dp_old", None, "1", 2, "https://v1.example")], uri="https://v2.example"),
        register_uri="https://v2.example",
    ),
    "url mode: the same URL is current": Case(
        Facts(NEW, [dep("dp_v2", None, "1", 0, "https://v2.example/")], uri="https://v2.example"),
        current=True,
    ),
    "url mode: a URL still draining cannot become active again": Case(
        Facts(
            NEW,
            [dep("dp_v1", None, "1", 2, "https://v1.example"), dep("dp_v2", None, "2", 0, "x")],
            uri="https://v1.example",
        ),
        draining=["dp_v1"],
        refused="still",
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_decide(name: str) -> None:
    case = CASES[name]
    plan = decide(case.facts)
    assert plan.start == case.start
    assert plan.register == case.register
    assert plan.register_uri == case.register_uri
    assert plan.restart == case.restart
    assert [d.id for d in plan.retire] == case.retire
    assert [d.id for d in plan.draining] == case.draining
    assert plan.stop == case.stop
    assert plan.current == case.current
    assert (case.refused in plan.refused) if case.refused else not plan.refused
    if case.refused:
        assert plan.start is None and plan.register is None


@pytest.mark.parametrize("name", list(CASES))
def test_a_plan_carried_out_is_stable(name: str) -> None:
    """Idempotence: once the plan is done, deciding again wants nothing more."""
    case = CASES[name]
    if case.refused or case.facts.uri is not None:
        return
    plan = decide(case.facts)
    after = _carry_out(case.facts, plan)
    again = decide(after)
    assert not again.changes, again
    assert again.current


def _carry_out(facts: Facts, plan: Plan) -> Facts:
    """The facts after deploy carried the plan out and everything drained."""
    deployments = [d for d in facts.deployments if d not in plan.retire]
    alive = set(facts.alive) | set(plan.restart) - set(plan.stop)
    if plan.register is not None:
        alive.add(plan.register)
        deployments.append(Deployment("dp_next", "x", "9", plan.register.version, plan.register))
    active = deployments[-1] if plan.register is not None else None
    drained = [
        Deployment(d.id, d.uri, d.created_at, d.version, d.instance, 0) if d is not active else d
        for d in deployments
    ]
    last = decide(Facts(facts.version, drained, frozenset(alive), frozenset(alive), PORTS))
    kept = [d for d in drained if d not in last.retire]
    alive -= {d.instance for d in last.retire if d.instance}
    alive -= set(last.stop)
    return Facts(facts.version, kept, frozenset(alive), frozenset(alive), PORTS,
                 tunnel=facts.tunnel)  # fmt: skip


def sig(**services: Any) -> dict[str, dict[str, Any]]:
    return {n: {"ty": ty, "handlers": handlers} for n, (ty, handlers) in services.items()}


BASE = sig(
    Ticket=("VirtualObject", {"get": ["Shared"], "hold": ["Exclusive"]}),
    SeatMap=("VirtualObject", {"get": ["Shared"]}),
)


@pytest.mark.parametrize(
    ("after", "found"),
    [
        (BASE, []),
        (
            sig(
                Ticket=("VirtualObject", {"get": ["Shared"], "hold": ["Exclusive"], "x": [None]}),
                SeatMap=("VirtualObject", {"get": ["Shared"]}),
                Probe=("Service", {"ping": [None]}),
            ),
            [],
        ),
        (
            sig(Ticket=("VirtualObject", {"get": ["Shared"], "hold": ["Exclusive"]})),
            ["service SeatMap removed"],
        ),
        (
            sig(
                Ticket=("VirtualObject", {"get": ["Shared"]}),
                SeatMap=("Service", {"get": [None]}),
            ),
            [
                "service SeatMap: type VirtualObject → Service",
                "handler SeatMap/get: kind Shared → None",
                "handler Ticket/hold removed",
            ],
        ),
        (
            sig(
                Ticket=("VirtualObject", {"get": ["Exclusive"], "hold": ["Exclusive"]}),
                SeatMap=("VirtualObject", {"get": ["Shared"]}),
            ),
            ["handler Ticket/get: kind Shared → Exclusive"],
        ),
    ],
)
def test_breaking_changes(after: dict[str, dict[str, Any]], found: list[str]) -> None:
    assert breaking_changes(BASE, after) == found


def test_version_id_follows_sources_and_settings(tmp_path: Path) -> None:
    pkg = tmp_path / "service"
    pkg.mkdir()
    (pkg / "app.py").write_text("A = 1\n")
    first = version_id(pkg, {"NEXUS_HOLD_SECONDS": "900"})
    assert len(first) == 10 and first == version_id(pkg, {"NEXUS_HOLD_SECONDS": "900"})
    assert version_id(pkg, {"NEXUS_HOLD_SECONDS": "5"}) != first
    (pkg / "__pycache__").mkdir()
    (pkg / "__pycache__" / "app.cpython-311.pyc").write_bytes(b"x")
    assert version_id(pkg, {"NEXUS_HOLD_SECONDS": "900"}) == first  # bytecode does not count
    (pkg / "app.py").write_text("A = 2\n")
    assert version_id(pkg, {"NEXUS_HOLD_SECONDS": "900"}) != first


def test_a_snapshot_is_immutable_and_removable(tmp_path: Path) -> None:
    pkg = tmp_path / "src" / "service"
    pkg.mkdir(parents=True)
    (pkg / "app.py").write_text("A = 1\n")
    home = snapshot(pkg, tmp_path / "versions", "v1")
    (pkg / "app.py").write_text("A = 2\n")
    assert snapshot(pkg, tmp_path / "versions", "v1") == home
    assert (home / "service" / "app.py").read_text() == "A = 1\n"  # what v1 runs, still
    assert remove_snapshot(tmp_path / "versions", "v1")
    assert not home.exists() and not remove_snapshot(tmp_path / "versions", "v1")


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        ("service-0123456789-9080", Instance("0123456789", 9080)),
        ("service-0123456789-connect", Instance("0123456789", None)),
        ("service", None),
        ("service-xyz-9080", None),
        ("gateway", None),
    ],
)
def test_instance_names(name: str, parsed: Instance | None) -> None:
    assert Instance.parse(name) == parsed
    if parsed is not None:
        assert parsed.name == name
