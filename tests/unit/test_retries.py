"""Retries of safe admin and ingress calls (ops/clients/admin.py `_Client.request`): against a
real HTTP stand-in on 127.0.0.1 that answers 429 and then 200, and against
MockTransport for the budget's edges."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from ops.base.errors import ApiError
from ops.base.processes import free_port
from ops.clients.admin import AdminClient, IngressClient, retry_after_s


class StandIn(ThreadingHTTPServer):
    """Answers each request with the next of `answers` (status, headers, body); the last
    one repeats. Records what it was asked and when."""

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes]]) -> None:
        super().__init__(("127.0.0.1", free_port()), _Handler)
        self.answers = answers
        self.seen: list[tuple[float, str, str]] = []


class _Handler(BaseHTTPRequestHandler):
    server: StandIn

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        srv = self.server
        srv.seen.append((time.monotonic(), self.command, self.path))
        status, headers, body = srv.answers[min(len(srv.seen), len(srv.answers)) - 1]
        self.send_response(status)
        for name, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads `seen` instead."""


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    rows = json.dumps({"rows": [{"n": 1}]}).encode()
    server = StandIn([(429, {"Retry-After": "1"}, b'{"message":"slow down"}'), (200, {}, rows)])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_sql_answered_429_then_200_is_retried_after_retry_after(stand_in: StandIn) -> None:
    admin = AdminClient(f"http://127.0.0.1:{stand_in.server_address[1]}")
    try:
        assert admin.query("SELECT 1 AS n") == [{"n": 1}]
    finally:
        admin.close()
    assert [(m, p) for _, m, p in stand_in.seen] == [("POST", "/query"), ("POST", "/query")]
    waited = stand_in.seen[1][0] - stand_in.seen[0][0]
    assert 0.9 <= waited < 5, f"waited {waited:.2f}s, Retry-After said 1s"


def test_budget_spent_fails_naming_url_and_last_answer(stand_in: StandIn) -> None:
    stand_in.answers = [(503, {}, b'{"message":"introspection overloaded"}')]
    url = f"http://127.0.0.1:{stand_in.server_address[1]}"
    admin = AdminClient(url, retry_budget_s=1.0)
    started = time.monotonic()
    try:
        with pytest.raises(ApiError) as info:
            admin.query("SELECT 1")
    finally:
        admin.close()
    took = time.monotonic() - started
    message = str(info.value)
    assert f"{url}/query" in message and "HTTP 503" in message
    assert "introspection overloaded" in message and "retry budget 1s" in message
    assert info.value.status == 503
    assert 1 < len(stand_in.seen) <= 4 and took < 3


# --- MockTransport: which calls are retried, and how long ------------------------------


class Script:
    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        return answer


def client(
    script: Script, cls: type[AdminClient] | type[IngressClient] = AdminClient
) -> tuple[AdminClient | IngressClient, list[float]]:
    pauses: list[float] = []
    made = cls("http://x.test", transport=httpx.MockTransport(script), sleep=pauses.append)
    return made, pauses


def test_pauses_double_and_stop_within_the_budget() -> None:
    script = Script(httpx.Response(502, text="bad gateway"))
    admin, pauses = client(script)
    assert isinstance(admin, AdminClient)
    with pytest.raises(ApiError, match="last answer: HTTP 502: bad gateway"):
        admin.version()
    assert pauses[:4] == [0.25, 0.5, 1.0, 2.0]
    assert sum(pauses) <= admin.retry_budget_s
    assert script.calls == len(pauses) + 1


def test_retry_after_longer_than_the_budget_fails_at_once() -> None:
    script = Script(httpx.Response(429, headers={"Retry-After": "3600"}, text="later"))
    admin, pauses = client(script)
    assert isinstance(admin, AdminClient)
    with pytest.raises(ApiError, match="after 1 attempt"):
        admin.deployments()
    assert pauses == [] and script.calls == 1


def test_a_dropped_connection_is_retried_a_refused_one_is_not() -> None:
    rows = httpx.Response(200, json={"rows": []})
    admin, pauses = client(Script(httpx.ReadError("reset by peer"), rows))
    assert isinstance(admin, AdminClient)
    assert admin.query("SELECT 1") == [] and pauses == [0.25]
    admin, pauses = client(Script(httpx.ConnectError("refused"), rows))
    assert isinstance(admin, AdminClient)
    with pytest.raises(ApiError, match="did not answer POST /query: ConnectError refused"):
        admin.query("SELECT 1")
    assert pauses == []


def test_unsafe_calls_are_not_retried() -> None:
    script = Script(httpx.Response(503, text="busy"))
    admin, pauses = client(script)
    assert isinstance(admin, AdminClient)
    with pytest.raises(ApiError):
        admin.cancel("inv_1ebPkxAd0hqz0snLun9SxDg9As64NoXv6v")
    assert script.calls == 1 and pauses == []


def test_ingress_retries_reads_only() -> None:
    script = Script(httpx.Response(503, text="busy"), httpx.Response(200, json={"status": "X"}))
    ingress, pauses = client(script, IngressClient)
    assert isinstance(ingress, IngressClient)
    assert ingress.call("Ticket", "get", key="a:1").status_code == 200 and pauses == [0.25]
    script = Script(httpx.Response(503, text="busy"))
    ingress, pauses = client(script, IngressClient)
    assert isinstance(ingress, IngressClient)
    assert ingress.call("Checkout", "process", {"ticketId": "a:1"}).status_code == 503
    assert script.calls == 1 and pauses == []


def test_health_is_never_retried() -> None:
    script = Script(httpx.Response(503, text="starting"))
    admin, _ = client(script)
    assert isinstance(admin, AdminClient)
    assert admin.healthy() is False and script.calls == 1


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("7", 7.0), (" 0 ", 0.0), (None, None), ("soon", None), ("", None)],
)
def test_retry_after_seconds(header: str | None, seconds: float | None) -> None:
    assert retry_after_s(header) == seconds


def test_retry_after_http_date() -> None:
    now = 1_764_520_000.0
    assert retry_after_s(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)
    assert retry_after_s(formatdate(now - 30, usegmt=True), now=now) == 0.0
