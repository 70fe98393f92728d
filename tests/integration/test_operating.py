"""Operating live traffic against a real restate-server: `invoke invocations`, `cancel`,
`purge`, the audit of stuck work, `--json` plays, `invoke --dry`, and the read handlers'
contract for empty bodies of any content type."""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ops.base.environments import Endpoint
from ops.base.processes import free_port, poll_until
from ops.clients.admin import GatewayClient
from ops.clients.invocations import open_invocations, status_of
from ops.operations.audit import audit
from ops.release.stack import GATEWAY, Stack, asgi_spec, deploy, down
from tests.conftest import EnvFactory, run_invoke
from tests.integration.inflight import checkout_in_flight

pytestmark = pytest.mark.integration

STUCK = "stuck-app"


def seat(event: str = "ops") -> str:
    return f"{event}-{uuid.uuid4().hex[:8]}:s1"


def invoke_json(*args: str) -> Any:
    proc = run_invoke(*args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


# --- on the shared stack ---------------------------------------------------------------


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_reads_accept_an_empty_body_of_any_content_type(
    stack: Stack, content_type: str | None
) -> None:
    """What `curl -d ''` sends (an empty form-encoded body), through the real ingress."""
    t = seat()
    headers = {"Content-Type": content_type} if content_type else {}
    url = stack.env.ingress.url
    got = httpx.post(f"{url}/Ticket/{t}/get", content=b"", headers=headers)
    assert got.status_code == 200, got.text
    assert got.json() == {"status": "AVAILABLE", "reservedBy": None, "reservedUntil": None}
    event = t.split(":")[0]
    seats = httpx.post(f"{url}/SeatMap/{event}/get", content=b"", headers=headers)
    assert seats.status_code == 200 and seats.json() == [], seats.text
    braces = httpx.post(f"{url}/Ticket/{t}/get", json={})
    assert braces.status_code == 200 and braces.json() == got.json()
    garbage = httpx.post(f"{url}/Ticket/{t}/get", content=b"x{", headers={"Content-Type": "a/b"})
    assert garbage.status_code == 400 and "must be JSON" in garbage.text, garbage.text
    typed = {"Content-Type": "application/json"}
    broken = httpx.post(f"{url}/Ticket/{t}/get", content=b"x{", headers=typed)
    assert broken.status_code == 400 and "not valid JSON" in broken.text, broken.text
    for path in (f"/Ticket/{t}/get", f"/SeatMap/{event}/get"):
        plain = httpx.post(url + path, content=b"{}", headers={"Content-Type": "text/plain"})
        assert plain.status_code == 400 and "must be JSON" in plain.text, plain.text


def test_a_held_checkout_is_listed_with_its_seat_and_cancel_ends_it(stack: Stack) -> None:
    t = seat()
    env_file = str(stack.env.file)
    gateway = GatewayClient(stack.env.gateway.url)
    charges_sent = gateway.attempts()
    with checkout_in_flight(stack, t, "olga", "card_success", charge_ms=8000) as pending:
        assert poll_until(lambda: gateway.attempts() > charges_sent, 10.0)  # charging now
        listed = invoke_json("invocations", "--env", env_file, "--service", "Checkout", "--json")
        mine = [i for i in listed["invocations"] if i["seat"] == t]
        assert len(mine) == 1, listed
        found = mine[0]
        assert found["holds_seat"] is True and found["target"] == "Checkout/process"
        assert found["status"] in ("running", "suspended") and found["stuck"] is None
        assert found["pinned_deployment"].startswith("dp_") and found["age_s"] >= 0
        text = run_invoke("invocations", "--env", env_file).stdout
        assert f"{t} (held)" in text and found["id"] in text

        killed = run_invoke("cancel", "--env", env_file, "--id", found["id"], "--kill")
        assert killed.returncode == 2, killed.stdout + killed.stderr
        assert "seat stays held" in killed.stderr and "--force" in killed.stderr
        assert status_of(stack.admin, found["id"]) != "completed"  # nothing was done

        cancel = run_invoke("cancel", "--env", env_file, "--id", found["id"])
        assert cancel.returncode == 0, cancel.stdout + cancel.stderr
        assert f"seat {t} now AVAILABLE" in cancel.stdout
        assert "changed=1 failed=0" in cancel.stdout
    answer = pending.result()
    assert answer.status_code == 409 and "Checkout cancelled during payment" in answer.text
    assert stack.ingress.call("Ticket", "get", key=t).json()["status"] == "AVAILABLE"
    time.sleep(8.5)  # past the slow charge: one still in flight would have landed by now
    assert gateway.live_charges(t) == []
    assert audit(stack.env, prefix=t).ok
    gateway.close()


# --- on a stack of its own ---------------------------------------------------------------


@pytest.fixture
def own(make_env: EnvFactory) -> Iterator[Stack]:
    env = make_env("ops")
    out = io.StringIO()
    if deploy(env, out=out).failed:
        down(env, purge=True, out=io.StringIO())
        pytest.fail(out.getvalue())
    stack = Stack(env)
    yield stack
    stack.procs.stop(STUCK)
    down(env, purge=True, out=io.StringIO())


def test_json_plays_parse_and_match_the_text_recap(own: Stack) -> None:
    env_file = str(own.env.file)
    proc = run_invoke("deploy", "--env", env_file, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    steps, recap = records[:-1], records[-1]
    assert {s["name"] for s in steps} >= {"server", "gateway", "service", "registration", "smoke"}
    assert all(set(s) == {"play", "name", "status", "would", "message", "diff", "seconds"}
               for s in steps)  # fmt: skip
    text = run_invoke("deploy", "--env", env_file).stdout.splitlines()[-1]
    counts = recap["recap"]
    assert text == (
        f"RECAP [{recap['play']}] ok={counts['ok']} changed={counts['changed']}"
        f" failed={counts['failed']} skipped={counts['skipped']}"
    )
    assert counts["changed"] == 0 and recap["failed"] is False
    assert [s["status"] for s in steps].count("ok") == counts["ok"]

    down_check = run_invoke("down", "--env", env_file, "--json", "--check")
    downs = [json.loads(line) for line in down_check.stdout.splitlines()]
    assert downs[-1]["check"] is True and all(d["would"] for d in downs[:-1] if "name" in d)


def test_dry_down_leaves_everything_running(own: Stack) -> None:
    before = {n: own.procs.info(n).pid for n in own.procs.known()}
    assert {own.service_instance().name, GATEWAY} <= set(before) and all(before.values())
    proc = run_invoke("--dry", "down", "--env", str(own.env.file))
    assert proc.returncode == 0, proc.stderr
    assert "check mode: nothing will be changed" in proc.stdout
    after = {n: own.procs.info(n) for n in own.procs.known()}
    assert {n: i.pid for n, i in after.items()} == before
    assert all(i.alive for i in after.values())
    assert own.admin.healthy()
    refused = run_invoke("--dry", "chaos", "--env", str(own.env.file))
    assert refused.returncode == 2 and "has no check mode" in refused.stderr


def start_stuck_service(stack: Stack) -> None:
    """The test-only Stuck service (tests/integration/stuck_app.py) as a deployment of
    its own beside the booking service."""
    endpoint = Endpoint(f"http://127.0.0.1:{free_port()}")
    spec = asgi_spec(
        STUCK,
        "tests.integration.stuck_app:app",
        endpoint,
        stack.env.root,
        sources=stack.env.root / "tests" / "integration" / "stuck_app.py",
    )
    stack.procs.start(spec)
    stack.admin.register(endpoint.url, force=False, dry_run=False)


def test_stuck_work_fails_the_audit_until_cancelled(own: Stack) -> None:
    env_file = str(own.env.file)
    assert run_invoke("audit", "--env", env_file).returncode == 0
    start_stuck_service(own)
    sent = own.ingress.call("Stuck", "forever/send", "ops-z:9")
    assert sent.status_code == 202, sent.text
    # A retryable error on every attempt: Restate backs off and tries again forever.
    assert poll_until(
        lambda: any(i.retry_count > 2 for i in open_invocations(own.admin, service="Stuck")),
        30.0,
    )
    report = run_invoke("audit", "--env", env_file, "--max-retries", "2")
    assert report.returncode == 1, report.stdout
    assert "audit FAILED" in report.stdout and "stuck invocation inv_" in report.stdout
    assert "Stuck/forever" in report.stdout and "stuck on purpose" in report.stdout
    assert "audit ok" not in report.stdout

    listed = invoke_json("invocations", "--env", env_file, "--max-retries", "2", "--json")
    assert listed["stuck"] == 1 and listed["invocations"][0]["target"] == "Stuck/forever"
    assert listed["invocations"][0]["stuck"].startswith("retried")

    # Every attempt fails before an await, so none ever sees a cancellation: cancel says
    # so after its bounded wait, and kill ends it (allowed: it is not a Checkout).
    cancel = run_invoke("cancel", "--env", env_file, "--stuck", "--max-retries", "2", "--wait", "3")
    assert cancel.returncode == 1, cancel.stdout + cancel.stderr
    assert "still backing-off after 3s" in cancel.stdout and "--kill" in cancel.stdout
    kill = run_invoke("cancel", "--env", env_file, "--stuck", "--max-retries", "2", "--kill")
    assert kill.returncode == 0, kill.stdout + kill.stderr
    assert "killed Stuck/forever: ended" in kill.stdout
    assert run_invoke("audit", "--env", env_file, "--max-retries", "2").returncode == 0

    purge = run_invoke("purge", "--env", env_file)
    assert purge.returncode == 0 and "purged" in purge.stdout, purge.stdout + purge.stderr
    left = own.admin.query("SELECT count(*) AS n FROM sys_invocation WHERE status = 'completed'")
    assert left[0]["n"] == 0
    again = run_invoke("purge", "--env", env_file)
    assert "no completed invocations to purge" in again.stdout
