"""Durable execution: a service killed in the middle of a payment is replayed, and the
booking still costs exactly one charge and sends exactly one mail."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from ops.base.steps import Status, StepContext
from ops.release.stack import Stack
from ops.server.runtimes import ensure_process

pytestmark = pytest.mark.integration


def mails_for(stack: Stack, ticket_id: str) -> list[Path]:
    outbox = Path(stack.outbox) / "new"
    return [p for p in outbox.glob("*.eml") if ticket_id in p.read_text()]


def gateway_attempts(stack: Stack) -> int:
    return int(httpx.get(f"{stack.env.gateway.url}/charges").json()["attempts"])


def wait_for(predicate, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_one_mail_per_booking(stack: Stack) -> None:
    t = f"mail-{uuid.uuid4().hex[:8]}:s1"
    resp = stack.ingress.call("Checkout", "process", {"ticketId": t, "userId": "quinn"})
    assert resp.status_code == 200
    assert wait_for(lambda: len(mails_for(stack, t)) == 1)
    time.sleep(0.5)
    assert len(mails_for(stack, t)) == 1


def test_service_killed_mid_payment_charges_once_and_mails_once(stack: Stack) -> None:
    gw = stack.env.gateway.url
    t = f"crash-{uuid.uuid4().hex[:8]}:s1"
    httpx.put(f"{gw}/admin/config", json={"latency_ms": 1500}).raise_for_status()
    try:
        before = gateway_attempts(stack)
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(
                stack.ingress.call,
                "Checkout",
                "process",
                {"ticketId": t, "userId": "rita"},
                timeout=60,
            )
            assert wait_for(lambda: gateway_attempts(stack) > before), (
                "charge never reached the gateway"
            )
            name = stack.service_instance().name
            killed = stack.procs.kill(name)
            assert killed is not None
            stack.procs.stop(name)
            restarted = ensure_process(stack.procs, stack.service_spec(), StepContext())
            assert restarted.status is Status.CHANGED
            resp = answer.result(timeout=60)
    finally:
        httpx.put(f"{gw}/admin/config", json={"latency_ms": 0})
    assert resp.status_code == 200, resp.text
    assert resp.json() == "Booking Confirmed"
    rows = httpx.get(f"{gw}/charges", params={"ticketId": t}).json()["charges"]
    assert len(rows) == 1, rows
    assert gateway_attempts(stack) >= before + 2, "the payment step was not replayed"
    assert stack.ingress.call("Ticket", "get", key=t).json()["status"] == "SOLD"
    assert wait_for(lambda: len(mails_for(stack, t)) == 1)
    time.sleep(0.5)
    assert len(mails_for(stack, t)) == 1
