"""Payment client (service/payment.py): retry and classification rules against a scripted
`Post`, and the aiohttp exchange itself against a real loopback server."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from service import payment
from service.config import Settings
from service.models import ChargeOutcome
from service.payment import Answer, GatewayTimeout, GatewayUnreachable

SETTINGS = Settings(
    gateway_url="http://gateway.test",
    hold_seconds=900.0,
    payment_timeout_s=0.5,
    payment_attempts=4,
    payment_backoff_s=0.001,
    mail_outbox=Path("/nonexistent/outbox"),
    identity_keys=(),
)


def reply(status: int, data: Any = None, text: str | None = None) -> Answer:
    body = text.encode() if text is not None else json.dumps(data).encode() if data else b""
    return Answer(status, body)


@dataclass
class Sent:
    url: str
    body: dict[str, Any] | None
    headers: dict[str, str]
    timeout_s: float


class Recorder:
    """A `Post` that plays a script of answers (or exceptions) and records requests."""

    def __init__(self, *answers: Answer | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[Sent] = []

    async def __call__(
        self, url: str, body: dict[str, Any] | None, headers: dict[str, str], timeout_s: float
    ) -> Answer:
        self.requests.append(Sent(url, body, headers, timeout_s))
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


def charge(rec: Recorder, settings: Settings = SETTINGS, **kw: str) -> ChargeOutcome:
    args = {
        "idempotency_key": "checkout-k1",
        "ticket_id": "e:1",
        "user_id": "alice",
        "payment_method_id": "card_success",
        **kw,
    }
    return asyncio.run(payment.charge(settings, post=rec, **args))


def test_success_returns_charge_id() -> None:
    rec = Recorder(reply(200, {"id": "ch_123", "status": "succeeded"}))
    out = charge(rec)
    assert out.status == "succeeded"
    assert out.charge_id == "ch_123"
    assert out.attempts == 1
    assert len(rec.requests) == 1


def test_request_shape() -> None:
    rec = Recorder(reply(200, {"id": "ch_1"}))
    charge(rec, idempotency_key="key-7", ticket_id="t:9", user_id="zoë", payment_method_id="pm")
    req = rec.requests[0]
    assert req.url == "http://gateway.test/charges"
    assert req.headers["Idempotency-Key"] == "key-7"
    assert req.timeout_s == SETTINGS.payment_timeout_s
    assert req.body is not None
    assert req.body["paymentMethodId"] == "pm"
    assert req.body["ticketId"] == "t:9"
    assert req.body["userId"] == "zoë"
    assert isinstance(req.body["amount"], int)
    assert req.body["currency"] == "EUR"


def test_decline_is_one_attempt() -> None:
    rec = Recorder(reply(402, {"error": "Payment declined"}))
    out = charge(rec)
    assert out.status == "declined"
    assert out.detail == "Payment declined"
    assert out.attempts == 1
    assert out.charge_id is None
    assert len(rec.requests) == 1


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        (reply(402, {"message": "insufficient funds"}), "insufficient funds"),
        (reply(402, text="<html>no</html>"), "HTTP 402"),
        (reply(402, ["x"]), "HTTP 402"),
    ],
)
def test_decline_detail(answer: Answer, detail: str) -> None:
    out = charge(Recorder(answer))
    assert out.status == "declined"
    assert out.detail == detail


@pytest.mark.parametrize("status", [400, 401, 404])
def test_other_4xx_is_a_gateway_problem_not_a_decline(status: int) -> None:
    rec = Recorder(reply(status, {}))
    out = charge(rec)
    assert out.status == "gateway_error"
    assert f"HTTP {status}" in out.detail
    assert len(rec.requests) == 1


def test_503_then_200_succeeds_on_second_attempt() -> None:
    rec = Recorder(reply(503), reply(200, {"id": "ch_2"}))
    out = charge(rec)
    assert out.status == "succeeded"
    assert out.charge_id == "ch_2"
    assert out.attempts == 2
    assert len(rec.requests) == 2


def test_429_is_retried() -> None:
    rec = Recorder(reply(429), reply(200, {"id": "ch_3"}))
    assert charge(rec).attempts == 2


@pytest.mark.parametrize("attempts", [1, 2, 4])
def test_always_503_is_gateway_error_after_all_attempts(attempts: int) -> None:
    rec = Recorder(reply(503, {"error": "Gateway error"}))
    out = charge(rec, replace(SETTINGS, payment_attempts=attempts))
    assert out.status == "gateway_error"
    assert out.attempts == attempts
    assert len(rec.requests) == attempts
    assert "HTTP 503" in out.detail
    assert f"after {attempts} attempts" in out.detail


def test_timeouts_are_gateway_error() -> None:
    rec = Recorder(GatewayTimeout("slow"))
    out = charge(rec)
    assert out.status == "gateway_error"
    assert len(rec.requests) == SETTINGS.payment_attempts
    assert "no answer within 0.5s" in out.detail


def test_connect_errors_are_gateway_error() -> None:
    rec = Recorder(GatewayUnreachable("ClientConnectorError"))
    out = charge(rec, replace(SETTINGS, payment_attempts=2))
    assert out.status == "gateway_error"
    assert "unreachable: ClientConnectorError" in out.detail
    assert len(rec.requests) == 2


def test_timeout_then_success() -> None:
    rec = Recorder(GatewayTimeout("slow"), reply(200, {"id": "ch_4"}))
    out = charge(rec)
    assert (out.status, out.charge_id, out.attempts) == ("succeeded", "ch_4", 2)


def test_same_idempotency_key_on_every_attempt() -> None:
    rec = Recorder(reply(503), GatewayTimeout("t"), reply(500), reply(503))
    out = charge(rec, idempotency_key="checkout-stable")
    assert out.status == "gateway_error"
    keys = [r.headers["Idempotency-Key"] for r in rec.requests]
    assert keys == ["checkout-stable"] * SETTINGS.payment_attempts
    bodies = {json.dumps(r.body, sort_keys=True) for r in rec.requests}
    assert len(bodies) == 1


def test_retries_pause_with_backoff_but_not_after_the_last_try(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pauses: list[float] = []

    async def record(seconds: float) -> None:
        pauses.append(seconds)

    monkeypatch.setattr(payment.asyncio, "sleep", record)
    rec = Recorder(reply(503))
    charge(rec, replace(SETTINGS, payment_attempts=5, payment_backoff_s=0.01))
    assert len(rec.requests) == 5
    assert pauses == [0.01, 0.02, 0.04, 0.08]


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
    rec = Recorder(reply(200, {"status": "refunded"}))
    result = asyncio.run(payment.refund(SETTINGS, idempotency_key="checkout-k", post=rec))
    assert result == "refunded"
    assert rec.requests[0].url == "http://gateway.test/charges/checkout-k/refund"
    assert rec.requests[0].body is None


def test_refund_of_unknown_charge() -> None:
    rec = Recorder(reply(404, {"error": "none"}))
    result = asyncio.run(payment.refund(SETTINGS, idempotency_key="k", post=rec))
    assert result == "nothing to refund"


def test_refund_gateway_error_raises_for_retry() -> None:
    with pytest.raises(payment.RefundFailed, match="HTTP 503"):
        asyncio.run(payment.refund(SETTINGS, idempotency_key="k", post=Recorder(reply(503))))


# --- the aiohttp exchange against a real loopback server ---------------------------------


async def _with_server(handler: Any, action: Any) -> Any:
    """Serve `handler` on a free 127.0.0.1 port, run `action(base_url)`, stop."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        return await action(f"http://127.0.0.1:{port}")
    finally:
        if payment._session is not None:
            await payment._session.close()
            payment._session = None
        await runner.cleanup()


def test_aiohttp_post_sends_json_and_headers() -> None:
    seen: list[tuple[str, str, dict[str, Any], str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(
            (request.method, request.path, await request.json(), request.headers["Idempotency-Key"])
        )
        return web.json_response({"id": "ch_9"}, status=200)

    async def action(base: str) -> Answer:
        return await payment.aiohttp_post(
            f"{base}/charges", {"userId": "zoë"}, {"Idempotency-Key": "k-1"}, 2.0
        )

    answer = asyncio.run(_with_server(handler, action))
    assert answer.status == 200
    assert answer.json() == {"id": "ch_9"}
    assert seen == [("POST", "/charges", {"userId": "zoë"}, "k-1")]


def test_aiohttp_post_maps_a_slow_gateway_to_timeout() -> None:
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return web.json_response({})

    async def action(base: str) -> float:
        started = time.monotonic()
        with pytest.raises(GatewayTimeout):
            await payment.aiohttp_post(f"{base}/charges", {}, {}, 0.1)
        return time.monotonic() - started

    waited = asyncio.run(_with_server(handler, action))
    assert 0.09 <= waited < 0.9


def test_aiohttp_post_maps_a_closed_port_to_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused

        async def action() -> Answer:
            try:
                return await payment.aiohttp_post(f"http://127.0.0.1:{port}/charges", {}, {}, 1.0)
            finally:
                if payment._session is not None:
                    await payment._session.close()
                    payment._session = None

        with pytest.raises(GatewayUnreachable, match="ClientConnectorError"):
            asyncio.run(action())
