"""Mock payment gateway: a small ASGI app served by granian (`ops.programs.mock_gateway:app`).

- `POST /charges` with an `Idempotency-Key` header and `{"paymentMethodId", ...}`:
  `card_success` → 200, `card_error` → 503, anything else → 402. A key that already has an
  answer gets the same answer and no second charge; 5xx answers are not remembered.
- `POST /charges/{key}/refund`: refunds the key's charge; a key with no charge yet is
  voided (404 all the same), so a charge still in flight under it, or sent later, is
  refused with 409 instead of taking money the refund already gave up on.
- `GET /charges[?ticketId=]` (for tests and audits),
  `GET|PUT /admin/config` (`latency_ms`, `outage_seconds`), `/status/{code}`, `/health`.

Settings: `GATEWAY_LATENCY_MS` (default 0) and `GATEWAY_JOURNAL` (a JSON-lines file that
makes charges survive a restart)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 64 * 1024
VOIDED = "Charge voided: its idempotency key was refunded before any charge"


class Gateway:
    """Charges, refunds and fault settings of one gateway process."""

    def __init__(self, latency_ms: float = 0.0, journal: Path | None = None) -> None:
        self.latency_ms = latency_ms
        self.outage_until = 0.0
        self.charges: dict[str, dict[str, Any]] = {}
        self.answers: dict[str, tuple[int, dict[str, Any]]] = {}
        self.attempts = 0
        self._inflight: dict[str, asyncio.Future[tuple[int, dict[str, Any]]]] = {}
        self._journal = journal
        if journal is not None and journal.exists():
            self._replay(journal)

    def _replay(self, journal: Path) -> None:
        for line in journal.read_text().splitlines():
            if line.strip():
                entry = json.loads(line)
                self._apply(entry)

    def _apply(self, entry: dict[str, Any]) -> None:
        key = entry["key"]
        if entry["kind"] == "answer":
            self.answers[key] = (entry["status"], entry["body"])
            if entry.get("charge"):
                self.charges[key] = entry["charge"]
        elif entry["kind"] == "refund" and key in self.charges:
            self.charges[key]["refunded"] = True
        elif entry["kind"] == "void":
            self.answers.setdefault(key, (409, {"error": VOIDED}))

    def _record(self, entry: dict[str, Any]) -> None:
        self._apply(entry)
        if self._journal is not None:
            with self._journal.open("a") as fh:
                fh.write(json.dumps(entry) + "\n")

    @property
    def in_outage(self) -> bool:
        return time.monotonic() < self.outage_until

    async def charge(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Answer a charge request, at most once per idempotency key."""
        self.attempts += 1
        if key in self.answers:
            return self.answers[key]
        if key in self._inflight:
            return await asyncio.shield(self._inflight[key])
        future: asyncio.Future[tuple[int, dict[str, Any]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._inflight[key] = future
        try:
            answer = await self._decide(key, body)
            future.set_result(answer)
            return answer
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved
            raise
        finally:
            del self._inflight[key]

    async def _decide(self, key: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.latency_ms > 0:
            await asyncio.sleep(self.latency_ms / 1000)
            if key in self.answers:  # voided by a refund while this charge was in flight
                return self.answers[key]
        method = body.get("paymentMethodId")
        if self.in_outage or method == "card_error":
            return 503, {"error": "Gateway error", "retryable": True}
        if method != "card_success":
            answer: tuple[int, dict[str, Any]] = (402, {"error": "Payment declined"})
            self._record({"kind": "answer", "key": key, "status": 402, "body": answer[1]})
            return answer
        charge = {
            "id": f"ch_{uuid.uuid4().hex[:16]}",
            "key": key,
            "status": "succeeded",
            "ticketId": body.get("ticketId"),
            "userId": body.get("userId"),
            "paymentMethodId": method,
            "amount": body.get("amount"),
            "currency": body.get("currency"),
            "refunded": False,
            "created": time.time(),
        }
        self._record(
            {"kind": "answer", "key": key, "status": 200, "body": charge, "charge": charge}
        )
        return 200, charge

    def refund(self, key: str) -> tuple[int, dict[str, Any]]:
        """Refund a successful charge, or void a key that has none; idempotent."""
        charge = self.charges.get(key)
        if charge is None:
            if key not in self.answers:
                self._record({"kind": "void", "key": key})
            return 404, {"error": f"No charge with idempotency key {key}"}
        if not charge["refunded"]:
            self._record({"kind": "refund", "key": key})
        return 200, {"id": charge["id"], "status": "refunded"}

    def configure(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """Change latency or start an outage (`outage_seconds`, 0 ends it)."""
        if "latency_ms" in body:
            value = body["latency_ms"]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                return 400, {"error": "latency_ms must be a number >= 0"}
            self.latency_ms = float(value)
        if "outage_seconds" in body:
            value = body["outage_seconds"]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                return 400, {"error": "outage_seconds must be a number >= 0"}
            self.outage_until = time.monotonic() + float(value)
        return 200, self.config()

    def config(self) -> dict[str, Any]:
        remaining = max(0.0, self.outage_until - time.monotonic())
        return {"latency_ms": self.latency_ms, "outage_remaining_s": round(remaining, 3)}


def _journal_from_env() -> Path | None:
    raw = os.environ.get("GATEWAY_JOURNAL")
    return Path(raw) if raw else None


gateway = Gateway(float(os.environ.get("GATEWAY_LATENCY_MS", "0") or 0), _journal_from_env())


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _respond(send: Send, status: int, body: Any) -> None:
    payload = json.dumps(body).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw or b"{}")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def route(
    method: str, path: str, query: str, headers: dict[str, str], raw: bytes
) -> tuple[int, Any]:
    """Dispatch one request to the gateway; returns status and JSON body."""
    parts = [p for p in path.split("/") if p]
    if parts == ["health"]:
        return 200, {"status": "ok"}
    if len(parts) == 2 and parts[0] == "status" and parts[1].isdigit():
        code = int(parts[1])
        return (code, {"status": code}) if 100 <= code <= 599 else (400, {"error": "bad status"})
    if parts == ["charges"] and method == "GET":
        wanted = parse_qs(query).get("ticketId", [None])[0]
        rows = [c for c in gateway.charges.values() if wanted is None or c["ticketId"] == wanted]
        return 200, {"charges": rows, "attempts": gateway.attempts}
    if parts == ["charges"] and method == "POST":
        key = headers.get("idempotency-key", "").strip()
        if not key:
            return 400, {"error": "Missing Idempotency-Key header"}
        body = _json_object(raw)
        if body is None:
            return 400, {"error": "Body must be a JSON object"}
        if not isinstance(body.get("paymentMethodId"), str):
            return 400, {"error": "Field 'paymentMethodId' must be a string"}
        return await gateway.charge(key, body)
    if len(parts) == 3 and parts[0] == "charges" and parts[2] == "refund" and method == "POST":
        return gateway.refund(parts[1])
    if parts == ["admin", "config"] and method == "GET":
        return 200, gateway.config()
    if parts == ["admin", "config"] and method in ("PUT", "POST"):
        body = _json_object(raw)
        if body is None:
            return 400, {"error": "Body must be a JSON object"}
        return gateway.configure(body)
    return 404, {"error": f"No route for {method} {path}"}


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """ASGI entry point."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    raw = await _read_body(receive)
    if raw is None:
        await _respond(send, 413, {"error": f"Body larger than {MAX_BODY} bytes"})
        return
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    query = scope.get("query_string", b"").decode("latin-1")
    status, body = await route(scope["method"], scope["path"], query, headers, raw)
    await _respond(send, status, body)
