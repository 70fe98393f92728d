"""Payment client (service/payment.py) against in-process httpx.MockTransport gateways."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from service import payment
from service.config import Settings
from service.models import ChargeOutcome

SETTINGS = Settings(
    gateway_url="http://gateway.test",
    hold_seconds=900.0,
    payment_timeout_s=0.5,
    payment_attempts=4,
    payment_backoff_s=0.001,
    mail_outbox=Path("/nonexistent/outbox"),
    identity_keys=(),
)

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A MockTransport handler that plays a script of answers and records requests."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def charge(rec: Recorder, settings: Settings = SETTINGS, **kw: str) -> ChargeOutcome:
    args = {
        "idempotency_key": "checkout-k1",
        "ticket_id": "e:1",
        "user_id": "alice",
        "payment_method_id": "card_success",
        **kw,
    }
    return asyncio.run(payment.charge(settings, transport=rec.transport, **args))


def test_success_returns_charge_id() -> None:
    rec = Recorder(httpx.Response(200, json={"id": "ch_123", "status": "succeeded"}))
    out = charge(rec)
    assert out.status == "succeeded"
    assert out.charge_id == "ch_123"
    assert out.attempts == 1
    assert len(rec.requests) == 1


def test_request_shape() -> None:
    rec = Recorder(httpx.Response(200, json={"id": "ch_1"}))
    charge(rec, idempotency_key="key-7", ticket_id="t:9", user_id="zoë", payment_method_id="pm")
    req = rec.requests[0]
    assert req.method == "POST"
    assert str(req.url) == "http://gateway.test/charges"
    assert req.headers["Idempotency-Key"] == "key-7"
    assert req.headers["Content-Type"] == "application/json"
    sent = json.loads(req.content)
    assert sent["paymentMethodId"] == "pm"
    assert sent["ticketId"] == "t:9"
    assert sent["userId"] == "zoë"
    assert isinstance(sent["amount"], int)
    assert sent["currency"] == "EUR"


def test_decline_is_one_attempt() -> None:
    rec = Recorder(httpx.Response(402, json={"error": "Payment declined"}))
    out = charge(rec)
    assert out.status == "declined"
    assert out.detail == "Payment declined"
    assert out.attempts == 1
    assert out.charge_id is None
    assert len(rec.requests) == 1


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        (httpx.Response(402, json={"message": "insufficient funds"}), "insufficient funds"),
        (httpx.Response(402, text="<html>no</html>"), "HTTP 402"),
        (httpx.Response(402, json=["x"]), "HTTP 402"),
    ],
)
def test_decline_detail(answer: httpx.Response, detail: str) -> None:
    out = charge(Recorder(answer))
    assert out.status == "declined"
    assert out.detail == detail


@pytest.mark.parametrize("status", [400, 401, 404])
def test_other_4xx_is_a_gateway_problem_not_a_decline(status: int) -> None:
    rec = Recorder(httpx.Response(status, json={}))
    out = charge(rec)
    assert out.status == "gateway_error"
    assert f"HTTP {status}" in out.detail
    assert len(rec.requests) == 1


def test_503_then_200_succeeds_on_second_attempt() -> None:
    rec = Recorder(httpx.Response(503), httpx.Response(200, json={"id": "ch_2"}))
    out = charge(rec)
    assert out.status == "succeeded"
    assert out.charge_id == "ch_2"
    assert out.attempts == 2
    assert len(rec.requests) == 2


def test_429_is_retried() -> None:
    rec = Recorder(httpx.Response(429), httpx.Response(200, json={"id": "ch_3"}))
    assert charge(rec).attempts == 2


@pytest.mark.parametrize("attempts", [1, 2, 4])
def test_always_503_is_gateway_error_after_all_attempts(attempts: int) -> None:
    rec = Recorder(httpx.Response(503, json={"error": "Gateway error"}))
    out = charge(rec, replace(SETTINGS, payment_attempts=attempts))
    assert out.status == "gateway_error"
    assert out.attempts == attempts
    assert len(rec.requests) == attempts
    assert "HTTP 503" in out.detail
    assert f"after {attempts} attempts" in out.detail


def test_timeouts_are_gateway_error() -> None:
    rec = Recorder(httpx.ReadTimeout("slow"))
    out = charge(rec)
    assert out.status == "gateway_error"
    assert len(rec.requests) == SETTINGS.payment_attempts
    assert "no answer within 0.5s" in out.detail


def test_connect_errors_are_gateway_error() -> None:
    rec = Recorder(httpx.ConnectError("refused"))
    out = charge(rec, replace(SETTINGS, payment_attempts=2))
    assert out.status == "gateway_error"
    assert "unreachable: ConnectError" in out.detail
    assert len(rec.requests) == 2


def test_timeout_then_success() -> None:
    rec = Recorder(httpx.ReadTimeout("slow"), httpx.Response(200, json={"id": "ch_4"}))
    out = charge(rec)
    assert (out.status, out.charge_id, out.attempts) == ("succeeded", "ch_4", 2)


def test_same_idempotency_key_on_every_attempt() -> None:
    rec = Recorder(
        httpx.Response(503), httpx.ReadTimeout("t"), httpx.Response(500), httpx.Response(503)
    )
    out = charge(rec, idempotency_key="checkout-stable")
    assert out.status == "gateway_error"
    keys = [r.headers["Idempotency-Key"] for r in rec.requests]
    assert keys == ["checkout-stable"] * SETTINGS.payment_attempts
    bodies = {r.content for r in rec.requests}
    assert len(bodies) == 1


def test_retries_are_bounded_in_time() -> None:
    rec = Recorder(httpx.Response(503))
    started = time.monotonic()
    charge(rec, replace(SETTINGS, payment_attempts=5, payment_backoff_s=0.01))
    elapsed = time.monotonic() - started
    # pauses 0.01 + 0.02 + 0.04 + 0.08 = 0.15 s: it does wait, but not after the last try
    assert 0.14 <= elapsed < 1.0


def test_backoff_delays() -> None:
    assert payment.backoff_delays(4, 0.25) == [0.25, 0.5, 1.0]
    assert payment.backoff_delays(1, 0.25) == []
    assert payment.backoff_delays(0, 0.25) == []
    assert payment.backoff_delays(3, 0.0) == [0.0, 0.0]


@pytest.mark.parametrize(
    ("status", "retry"), [(500, True), (502, True), (503, True), (429, True), (402, False)]
)
def test_is_retryable(status: int, retry: bool) -> None:
    assert payment.is_retryable(status) is retry


def test_refund() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"status": "refunded"})

    result = asyncio.run(
        payment.refund(
            SETTINGS, idempotency_key="checkout-k", transport=httpx.MockTransport(handler)
        )
    )
    assert result == "refunded"
    assert seen[0].method == "POST"
    assert str(seen[0].url) == "http://gateway.test/charges/checkout-k/refund"


def test_refund_of_unknown_charge() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(404, json={"error": "none"}))
    result = asyncio.run(payment.refund(SETTINGS, idempotency_key="k", transport=transport))
    assert result == "nothing to refund"


def test_refund_gateway_error_raises_for_retry() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(503))
    with pytest.raises(httpx.HTTPStatusError):
        asyncio.run(payment.refund(SETTINGS, idempotency_key="k", transport=transport))
