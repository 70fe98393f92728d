"""Fault injection (the ops/chaos package) against real stacks on loopback: the quick scenarios on
the session stack, the signing and crash scenarios on stacks of their own (a killed server
must not disturb other tests)."""

from __future__ import annotations

import io
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from ops.base.environments import Environment
from ops.chaos import run_chaos
from ops.release.stack import Stack, deploy, down
from ops.testing.checks import Outcome, closing_line
from tests.conftest import EnvFactory

pytestmark = pytest.mark.integration


def chaos(env: Environment, scenario: str) -> tuple[dict[str, Outcome], list[str]]:
    """Run scenarios; their outcomes by name and the printed lines (closing line checked)."""
    out = io.StringIO()
    started = time.monotonic()
    outcomes = run_chaos(env, scenario, out=out)
    lines = out.getvalue().strip().splitlines()
    print(f"\n{out.getvalue()}[{scenario}: {time.monotonic() - started:.1f}s]")
    assert lines[0].startswith(f"chaos {env.name}: ingress {env.ingress.url}")
    assert lines[-1] == closing_line(outcomes)
    assert len(lines) == len(outcomes) + 2
    return {o.name: o for o in outcomes}, lines


@contextmanager
def own_stack(make_env: EnvFactory, name: str, service: str = "") -> Iterator[Environment]:
    """A deployed stack of its own, stopped and purged afterwards."""
    env = make_env(name, service=service)
    out = io.StringIO()
    try:
        play = deploy(env, out=out)
        assert not play.failed, out.getvalue()
        yield env
    finally:
        gone = io.StringIO()
        down(env, purge=True, out=gone)
        assert "failed=0" in gone.getvalue().strip().splitlines()[-1], gone.getvalue()


def test_hot_seat(stack: Stack) -> None:
    outcomes, lines = chaos(stack.env, "hot-seat")
    hot = outcomes["hot-seat"]
    assert hot.status == "passed", hot.detail
    assert "1 x 200" in hot.detail and "99 x 409" in hot.detail and "1 live charge" in hot.detail
    assert lines[1].startswith("PASS  hot-seat")
    assert lines[-1] == "1 passed, 0 failed"


def test_hold_expiry(stack: Stack) -> None:
    outcomes, lines = chaos(stack.env, "hold-expiry")
    assert outcomes["hold-expiry"].status == "passed", outcomes["hold-expiry"].detail
    assert lines[-1] == "1 passed, 0 failed"


def test_gateway_outage(stack: Stack) -> None:
    outcomes, _ = chaos(stack.env, "gateway-outage")
    outage = outcomes["gateway-outage"]
    assert outage.status == "passed", outage.detail
    assert "Gateway timeout" in outage.detail and "audit ok" in outage.detail
    assert outage.seconds < 30


def test_bad_input(stack: Stack) -> None:
    outcomes, lines = chaos(stack.env, "bad-input")
    bad = outcomes["bad-input"]
    assert bad.status == "passed", bad.detail
    assert "no state written" in bad.detail
    assert lines[-1] == "1 passed, 0 failed"
    # The session stack is left clean: nothing retrying, the seats still answer.
    rows = stack.admin.query(
        "SELECT id FROM sys_invocation WHERE status != 'completed'"
        " AND starts_with(idempotency_key, 'chaos-')"
    )
    assert rows == []


def test_unsigned(make_env: EnvFactory) -> None:
    with own_stack(make_env, "chaos-sign", "signing = true") as env:
        outcomes, lines = chaos(env, "unsigned")
    assert outcomes["unsigned"].status == "passed", outcomes["unsigned"].detail
    assert "refused with 401" in outcomes["unsigned"].detail
    assert lines[-1] == "1 passed, 0 failed"


def test_service_crash_then_redeploy_changes_nothing(make_env: EnvFactory) -> None:
    with own_stack(make_env, "chaos-svc") as env:
        outcomes, lines = chaos(env, "service-crash,sold-seat-crash,restart-idempotence")
    for name in ("service-crash", "sold-seat-crash", "restart-idempotence"):
        assert outcomes[name].status == "passed", outcomes[name].detail
    assert "8/8 bookings 200" in outcomes["service-crash"].detail
    # The winner of a seat that the new process already knows sold still books it.
    sold = outcomes["sold-seat-crash"].detail
    assert "replayed to 200 Booking Confirmed" in sold and "no journal mismatch" in sold
    # the last refusals were answered without calling the Ticket
    assert re.search(r"calls to the Ticket: \[[01], 0, 0, 0\]", sold), sold
    assert "changed=0 failed=0" in outcomes["restart-idempotence"].detail
    assert lines[-1] == "3 passed, 0 failed"


def test_server_crash_then_redeploy_changes_nothing(make_env: EnvFactory) -> None:
    with own_stack(make_env, "chaos-srv") as env:
        outcomes, lines = chaos(env, "server-crash,restart-idempotence")
    for name in ("server-crash", "restart-idempotence"):
        assert outcomes[name].status == "passed", outcomes[name].detail
    assert "no invocation left open" in outcomes["server-crash"].detail
    assert lines[-1] == "2 passed, 0 failed"
