"""`invoke chaos --scenario server-upgrade` for real: a throwaway stack on restate-server
1.6.2, upgraded to 1.7.12 by deploy under load (real servers, service and mock gateway on
loopback); its checks pass and it leaves nothing behind."""

from __future__ import annotations

import io
import re
import time

import pytest

from ops.chaos import run_chaos
from ops.testing.checks import closing_line
from tests.conftest import EnvFactory

pytestmark = pytest.mark.integration


def test_server_upgrade_under_load_loses_nothing(make_env: EnvFactory) -> None:
    env = make_env("chaos-upgrade")  # never deployed: the scenario builds its own stack
    out = io.StringIO()
    started = time.monotonic()
    outcomes = run_chaos(env, "server-upgrade", out=out)
    took = time.monotonic() - started
    text = out.getvalue()
    print(f"\n{text}[server-upgrade: {took:.1f}s]")
    (outcome,) = outcomes
    assert outcome.status == "passed", outcome.detail
    lines = text.strip().splitlines()
    assert "a throwaway stack upgrade-" in lines[1] and "deleted afterwards" in lines[1]
    assert lines[-1] == closing_line(outcomes) == "1 passed, 0 failed"
    detail = outcome.detail
    assert "1.6.2 → 1.7.12 by deploy" in detail and "marker ['1.7.12']" in detail
    assert "0 open invocations, 0 journal mismatches" in detail and "audit ok" in detail
    assert re.search(r"ingress down \d+\.\d+s", detail), detail
    flight = re.search(r"(\d+) checkouts in flight at the stop", detail)
    assert flight and int(flight.group(1)) > 0, detail
    after = re.search(r"after (\d+) confirmed", detail)
    assert after and int(after.group(1)) > 0, detail
    # Torn down: no state left, so no PID file and no process of the throwaway stack.
    assert not (env.state_dir / "chaos").exists()
    assert took < 90
