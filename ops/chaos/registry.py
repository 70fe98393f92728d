"""The registry of chaos scenarios and the run over them. Adding a scenario is a
module with a `(ChaosContext) -> str` function and one line in `SCENARIOS`."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO

import httpx

from ops.base.environments import Environment
from ops.base.errors import NexusError
from ops.chaos.bad_input import bad_input
from ops.chaos.base import ChaosContext, Scenario
from ops.chaos.cluster_upgrade import cluster_minor_upgrade_scenario, cluster_upgrade_scenario
from ops.chaos.contention import hold_expiry, hot_seat
from ops.chaos.crashes import restart_idempotence, server_crash, service_crash
from ops.chaos.gateway import gateway_outage
from ops.chaos.node_loss import node_loss_scenario
from ops.chaos.node_replace import node_replace_scenario
from ops.chaos.rollout import rollout
from ops.chaos.signing import unsigned
from ops.chaos.sold_seats import sold_seat_crash
from ops.chaos.upgrade import server_upgrade
from ops.testing.checks import CheckFailed, Outcome, run_checks

SCENARIOS: dict[str, Scenario] = {
    "service-crash": service_crash,
    "sold-seat-crash": sold_seat_crash,
    "gateway-outage": gateway_outage,
    "server-crash": server_crash,
    "hot-seat": hot_seat,
    "hold-expiry": hold_expiry,
    "bad-input": bad_input,
    "unsigned": unsigned,
    "restart-idempotence": restart_idempotence,
    "node-loss": node_loss_scenario,
    "node-replace": node_replace_scenario,
    "cluster-upgrade": cluster_upgrade_scenario,
    "cluster-minor-upgrade": cluster_minor_upgrade_scenario,
    "rollout": rollout,
    "server-upgrade": server_upgrade,
}


def select(scenario: str | None) -> list[str]:
    """Scenario names to run: all, one, or a comma-separated list."""
    if not scenario:
        return list(SCENARIOS)
    names = [n.strip() for n in scenario.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise NexusError(
            f"unknown chaos scenario {', '.join(unknown) or scenario!r}"
            f" (known: {', '.join(SCENARIOS)})"
        )
    return names


def _guarded(fn: Scenario, cx: ChaosContext) -> Callable[[], str]:
    """Report any unexpected exception of a scenario as its failure, not a crash."""

    def run() -> str:
        try:
            return fn(cx)
        except (NexusError, httpx.HTTPError):  # Skip and CheckFailed are NexusErrors
            raise
        except Exception as exc:
            raise CheckFailed(f"{type(exc).__name__}: {exc}") from exc

    return run


def run_chaos(
    env: Environment, scenario: str | None = None, out: TextIO | None = None
) -> list[Outcome]:
    """Run one scenario (or all), a line each, then `N passed, N failed`."""
    names = select(scenario)
    stream = out or sys.stdout
    cx = ChaosContext(env, stream)
    print(
        f"chaos {env.name}: ingress {env.ingress.url}, run {cx.run_id}, seats {cx.prefix}*",
        file=stream,
        flush=True,
    )
    return run_checks([(n, _guarded(SCENARIOS[n], cx)) for n in names], out=stream)
