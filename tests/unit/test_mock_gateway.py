"""The mock payment gateway (ops/programs/mock_gateway.py), driven in-process through its
ASGI app."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from ops.programs import mock_gateway
from ops.programs.mock_gateway import MAX_BODY, Gateway

T = TypeVar("T")

CHARGE = {
    "paymentMethodId": "card_success",
    "ticketId": "e:1",
    "userId": "alice",
    "amount": 5000,
    "currency": "EUR",
}


@pytest.fixture
def gw(monkeypatch: pytest.MonkeyPatch) -> Gateway:
    """A fresh gateway behind the module's `route`/`app` (which use the singleton)."""
    fresh = Gateway()
    monkeypatch.setattr(mock_gateway, "gateway", fresh)
    return fresh


Scenario = Callable[[httpx.AsyncClient], Awaitable[T]]


def drive(scenario: Scenario[T]) -> T:
    async def main() -> T:
        transport = httpx.ASGITransport(app=mock_gateway.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.test") as client:
            return await scenario(client)

    return asyncio.run(main())


async def post_charge(
    client: httpx.AsyncClient, key: str | None, body: Any = None, method: str = "card_success"
) -> httpx.Response:
    headers = {} if key is None else {"Idempotency-Key": key}
    payload = body if body is not None else {**CHARGE, "paymentMethodId": method}
    return await client.post("/charges", json=payload, headers=headers)


async def list_charges(client: httpx.AsyncClient, query: str = "") -> dict[str, Any]:
    resp = await client.get(f"/charges{query}")
    assert resp.status_code == 200
    data: dict[str, Any] = resp.json()
    return data


# --- charges over HTTP -------------------------------------------------------------


def test_health(gw: Gateway) -> None:
    async def go(c: httpx.AsyncClient) -> httpx.Response:
        return await c.get("/health")

    resp = drive(go)
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok"}
    assert resp.headers["content-type"] == "application/json"


def test_card_success_charges_once_per_key(gw: Gateway) -> None:
    async def go(c: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response, dict[str, Any]]:
        first = await post_charge(c, "k1")
        second = await post_charge(c, "k1")
        return first, second, await list_charges(c)

    first, second, listing = drive(go)
    assert first.status_code == second.status_code == 200
    charge = first.json()
    assert charge["id"].startswith("ch_")
    assert second.json()["id"] == charge["id"]
    assert charge["status"] == "succeeded"
    assert charge["ticketId"] == "e:1"
    assert charge["userId"] == "alice"
    assert charge["key"] == "k1"
    assert [c["id"] for c in listing["charges"]] == [charge["id"]]
    assert listing["attempts"] == 2


def test_distinct_keys_make_distinct_charges(gw: Gateway) -> None:
    async def go(c: httpx.AsyncClient) -> dict[str, Any]:
        await post_charge(c, "k1")
        await post_charge(c, "k2", {**CHARGE, "ticketId": "e:2"})
        return await list_charges(c)

    listing = drive(go)
    assert len(listing["charges"]) == 2
    assert len({c["id"] for c in listing["charges"]}) == 2


def test_list_charges_filters_by_ticket(gw: Gateway) -> None:
    async def go(c: httpx.AsyncClient) -> tuple[dict[str, Any], dict[str, Any]]:
        await post_charge(c, "k1")
        await post_charge(c, "k2", {**CHARGE, "ticketId": "e:2"})
        return await list_charges(c, "?ticketId=e:2"), await list_charges(c, "?ticketId=zz")

    wanted, none = drive(go)
    assert [c["ticketId"] for c in wanted["charges"]] == ["e:2"]
    assert none["charges"] == []


@pytest.mark.parametrize("method", ["card_decline", "unknown_method", ""])
def test_declined_methods_are_402_and_remembered(gw: Gateway, method: str) -> None:
    async def go(c: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response, dict[str, Any]]:
        first = await post_charge(c, "kd", method=method)
        # the same key keeps its answer, even with a valid card now
        again = await post_charge(c, "kd", method="card_success")
        return first, again, await list_charges(c)

    first, again, listing = drive(go)
    assert first.status_code == 402
    assert first.json() == {"error": "Payment declined"}
    assert again.status_code == 402
    assert listing["charges"] == []


def test_card_error_is_503_and_not_remembered(gw: Gateway) -> None:
    async def go(c: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        failed = await post_charge(c, "ke", method="card_error")
        still = await post_charge(c, "ke", method="card_error")
        ok = await post_charge(c, "ke", method="card_success")
        return failed, still, ok

    failed, still, ok = drive(go)
    assert failed.status_code == still.status_code == 503
    assert failed.json()["retryable"] is True
    assert ok.status_code == 200
    assert list(gw.charges) == ["ke"]


@pytest.mark.parametrize("headers", [{}, {"Idempotency-Key": ""}, {"Idempotency-Key": "   "}])
def test_missing_idempotency_key_is_400(gw: Gateway, headers: dict[str, str]) -> None:
    async def go(c: httpx.AsyncClient) -> httpx.Response:
        return await c.post("/charges", json=CHARGE, headers=headers)

    resp = drive(go)
    assert resp.status_code == 400
    assert "Idempotency-Key" in resp.json()["error"]
    assert gw.charges == {}
    assert gw.attempts == 0


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"{not json", "JSON object"),
        (b"[1, 2]", "JSON object"),
        (b'"card_success"', "JSON object"),
        (b"{}", "paymentMethodId"),
        (b'{"paymentMethodId": 5}', "paymentMethodId"),
        (b"", "paymentMethodId"),
    ],
)
def test_bad_charge_bodies_are_400(gw: Gateway, raw: bytes, error: str) -> None:
    async def go(c: httpx.AsyncClient) -> httpx.Response:
        return await c.post("/charges", content=raw, headers={"Idempotency-Key": "k"})

    resp = drive(go)
    assert resp.status_code == 400
    assert error in resp.json()["error"]
    assert gw.answers == {}


def test_oversized_body_is_413(gw: Gateway) -> None:
    async def go(c: httpx.AsyncClient) -> httpx.Response:
        return await c.post(
            "/charges", content=b"x" * (MAX_BODY + 1), headers={"Idempotency-Key": "k"}
        )

    assert drive(go).status_code == 413


def test_refund_flow(gw: Gateway) -> None:
    async def go(c: httpx.AsyncClient) -> list[httpx.Response]:
        unknown = await c.post("/charges/nope/refund")
        charged = await post_charge(c, "kr")
        first = await c.post("/charges/kr/refund")
        second = await c.post("/charges/kr/refund")
        return [unknown, charged, first, second]

    unknown, charged, first, second = drive(go)
    assert unknown.status_code == 404
    assert "nope" in unknown.json()["error"]
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() == {"id": charged.json()["id"], "status": "refunded"}
    assert gw.charges["kr"]["refunded"] is True


def test_refund_of_declined_charge_is_404(gw: Gateway) -> None:
    async def go(c: httpx.AsyncClient) -> httpx.Response:
        await post_charge(c, "kd", method="card_decline")
        return await c.post("/charges/kd/refund")

    assert drive(go).status_code == 404


@pytest.mark.parametrize(("path", "status"), [("/status/418", 418), ("/status/503", 503)])
def test_status_route(gw: Gateway, path: str, status: int) -> None:
    async def go(c: httpx.AsyncClient) -> httpx.Response:
        return await c.get(path)

    resp = drive(go)
    assert resp.status_code == status
    assert resp.json() == {"status": status}


@pytest.mark.parametrize(("path", "status"), [("/status/99", 400), ("/status/600", 400)])
def test_status_route_out_of_range(gw: Gateway, path: str, status: int) -> None:
    async def go(c: httpx.AsyncClient) -> httpx.Response:
        return await c.get(path)

    assert drive(go).status_code == status


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("DELETE", "/charges"), ("GET", "/charges/k/refund"), ("GET", "/status/x")],
)
def test_unknown_routes_are_404(gw: Gateway, method: str, path: str) -> None:
    async def go(c: httpx.AsyncClient) -> httpx.Response:
        return await c.request(method, path)

    resp = drive(go)
    assert resp.status_code == 404
    assert path in resp.json()["error"]


def test_admin_config_latency(gw: Gateway) -> None:
    async def go(c: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        put = await c.put("/admin/config", json={"latency_ms": 12.5})
        return put, await c.get("/admin/config")

    put, got = drive(go)
    assert put.status_code == 200
    assert got.json() == {"latency_ms": 12.5, "outage_remaining_s": 0.0}
    assert gw.latency_ms == 12.5


@pytest.mark.parametrize(
    "body",
    [{"latency_ms": -1}, {"latency_ms": "fast"}, {"outage_seconds": -2}, {"outage_seconds": None}],
)
def test_admin_config_rejects_bad_values(gw: Gateway, body: dict[str, Any]) -> None:
    async def go(c: httpx.AsyncClient) -> httpx.Response:
        return await c.put("/admin/config", json=body)

    resp = drive(go)
    assert resp.status_code == 400
    assert next(iter(body)) in resp.json()["error"]
    assert not gw.in_outage
    assert gw.latency_ms == 0.0


def test_admin_config_rejects_non_object(gw: Gateway) -> None:
    async def go(c: httpx.AsyncClient) -> httpx.Response:
        return await c.post("/admin/config", content=b"[1]")

    assert drive(go).status_code == 400


def test_outage_makes_card_success_fail_until_it_ends(gw: Gateway) -> None:
    async def go(c: httpx.AsyncClient) -> list[Any]:
        cfg = await c.put("/admin/config", json={"outage_seconds": 60})
        during = await post_charge(c, "ko")
        ended = await c.put("/admin/config", json={"outage_seconds": 0})
        after = await post_charge(c, "ko")
        return [cfg, during, ended, after]

    cfg, during, ended, after = drive(go)
    assert cfg.json()["outage_remaining_s"] > 59
    assert during.status_code == 503
    assert ended.json()["outage_remaining_s"] == 0.0
    assert after.status_code == 200
    assert len(gw.charges) == 1


def test_latency_is_applied(gw: Gateway) -> None:
    gw.latency_ms = 50

    async def go(c: httpx.AsyncClient) -> float:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await post_charge(c, "kl")
        return loop.time() - started

    assert drive(go) >= 0.045


def test_lifespan_protocol() -> None:
    sent: list[dict[str, Any]] = []
    inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return inbox.pop(0)

    async def send(message: Any) -> None:
        sent.append(dict(message))

    asyncio.run(mock_gateway.app({"type": "lifespan"}, receive, send))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


# --- Gateway methods directly --------------------------------------------------------


def test_concurrent_requests_with_one_key_charge_once() -> None:
    gw = Gateway(latency_ms=20)

    async def go() -> list[tuple[int, dict[str, Any]]]:
        return list(await asyncio.gather(*(gw.charge("same", dict(CHARGE)) for _ in range(5))))

    answers = asyncio.run(go())
    assert {status for status, _ in answers} == {200}
    assert len({body["id"] for _, body in answers}) == 1
    assert len(gw.charges) == 1
    assert gw.attempts == 5


def test_journal_replay(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    first = Gateway(journal=journal)

    async def go() -> tuple[int, dict[str, Any]]:
        await first.charge("k-declined", {**CHARGE, "paymentMethodId": "card_decline"})
        await first.charge("k-error", {**CHARGE, "paymentMethodId": "card_error"})
        await first.charge("k-refunded", dict(CHARGE))
        return await first.charge("k-kept", dict(CHARGE))

    _, kept = asyncio.run(go())
    first.refund("k-refunded")
    assert len(journal.read_text().splitlines()) == 4  # 3 answers and 1 refund; no 503

    second = Gateway(journal=journal)
    assert set(second.charges) == {"k-refunded", "k-kept"}
    assert second.charges["k-refunded"]["refunded"] is True
    assert second.charges["k-kept"]["refunded"] is False
    assert "k-error" not in second.answers

    again = asyncio.run(second.charge("k-kept", dict(CHARGE)))
    assert again == (200, kept)
    declined = asyncio.run(second.charge("k-declined", dict(CHARGE)))
    assert declined[0] == 402
    assert len(second.charges) == 2

    # new work on the second instance is journaled too
    asyncio.run(second.charge("k-new", dict(CHARGE)))
    assert "k-new" in Gateway(journal=journal).charges


def test_a_refund_before_the_charge_voids_the_key(gw: Gateway) -> None:
    """A refund that finds nothing gives the key up: a charge still in flight under it,
    or sent later, takes no money."""
    gw.latency_ms = 200

    async def race() -> tuple[tuple[int, dict[str, Any]], tuple[int, dict[str, Any]]]:
        late = asyncio.create_task(gw.charge("k-late", dict(CHARGE)))
        await asyncio.sleep(0.05)
        refunded = gw.refund("k-late")
        return refunded, await late

    refunded, late = asyncio.run(race())
    assert refunded[0] == 404
    assert late == (409, {"error": mock_gateway.VOIDED})
    assert asyncio.run(gw.charge("k-late", dict(CHARGE)))[0] == 409
    assert gw.charges == {}


def test_a_void_survives_a_restart(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    Gateway(journal=journal).refund("k-v")
    assert asyncio.run(Gateway(journal=journal).charge("k-v", dict(CHARGE)))[0] == 409


def test_a_refund_after_a_decline_keeps_the_decline(gw: Gateway) -> None:
    assert asyncio.run(gw.charge("k-d", {**CHARGE, "paymentMethodId": "card_decline"}))[0] == 402
    assert gw.refund("k-d")[0] == 404
    assert asyncio.run(gw.charge("k-d", dict(CHARGE)))[0] == 402


def test_gateway_without_journal_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where a stray relative write would land
    gw = Gateway()
    gw.refund("k-void")
    asyncio.run(gw.charge("k", dict(CHARGE)))
    assert list(tmp_path.iterdir()) == []
    assert gw.config() == {"latency_ms": 0.0, "outage_remaining_s": 0.0}


def test_module_app_and_route_share_the_singleton() -> None:
    status, body = asyncio.run(mock_gateway.route("GET", "/admin/config", "", {}, b""))
    assert status == 200
    assert body == mock_gateway.gateway.config()


def test_route_payload_is_json_serialisable(gw: Gateway) -> None:
    status, body = asyncio.run(
        mock_gateway.route(
            "POST", "/charges", "", {"idempotency-key": "k"}, json.dumps(CHARGE).encode()
        )
    )
    assert status == 200
    assert json.loads(json.dumps(body))["id"] == gw.charges["k"]["id"]
