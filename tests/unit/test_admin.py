"""Admin API and ingress clients (ops/clients/admin.py) against httpx.MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ops.base.errors import ApiError, TokenRejected
from ops.clients.admin import AdminClient, IngressClient, signature, signature_diff

TOKEN = "tok-very-secret-31337"
ADMIN = "http://admin.test:9070"
INGRESS = "http://ingress.test:8080"


class Recorder:
    def __init__(self, handler: Callable[[httpx.Request], httpx.Response]) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def admin(
    handler: Callable[[httpx.Request], httpx.Response], token: str | None = TOKEN, url: str = ADMIN
) -> tuple[AdminClient, Recorder]:
    rec = Recorder(handler)
    client = AdminClient(url, token, transport=httpx.MockTransport(rec), sleep=lambda s: None)
    return client, rec


def ingress(
    handler: Callable[[httpx.Request], httpx.Response] | None = None, token: str | None = None
) -> tuple[IngressClient, Recorder]:
    rec = Recorder(handler or (lambda r: httpx.Response(200, json="ok")))
    return IngressClient(INGRESS, token, transport=httpx.MockTransport(rec)), rec


# --- tokens and errors ---------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
def test_token_rejected(status: int) -> None:
    client, _ = admin(lambda r: httpx.Response(status, text=f"bad token {TOKEN}"))
    with pytest.raises(TokenRejected) as info:
        client.deployments()
    message = str(info.value)
    assert f"token rejected by admin at {ADMIN}" in message
    assert str(status) in message
    assert TOKEN not in message
    assert info.value.status == status
    assert isinstance(info.value, ApiError)


def test_token_rejected_by_ingress() -> None:
    client, _ = ingress(lambda r: httpx.Response(401), token=TOKEN)
    with pytest.raises(TokenRejected, match=f"token rejected by ingress at {INGRESS}") as info:
        client.call("Ticket", "get", key="e:1")
    assert TOKEN not in str(info.value)


def test_healthy_reraises_token_rejected() -> None:
    client, _ = admin(lambda r: httpx.Response(401))
    with pytest.raises(TokenRejected):
        client.healthy()


def test_healthy() -> None:
    assert admin(lambda r: httpx.Response(200))[0].healthy() is True
    assert admin(lambda r: httpx.Response(503))[0].healthy() is False

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    assert admin(down)[0].healthy() is False


def test_bearer_token_is_sent() -> None:
    client, rec = admin(lambda r: httpx.Response(200, json={"deployments": []}))
    client.deployments()
    assert rec.last.headers["Authorization"] == f"Bearer {TOKEN}"


def test_no_authorization_without_token() -> None:
    client, rec = admin(lambda r: httpx.Response(200, json={"deployments": []}), token=None)
    client.deployments()
    assert "Authorization" not in rec.last.headers


def test_transport_error_is_api_error() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    client, _ = admin(down)
    with pytest.raises(ApiError) as info:
        client.services()
    message = str(info.value)
    assert ADMIN in message
    assert "GET /services" in message
    assert "ConnectError" in message
    assert TOKEN not in message
    assert not isinstance(info.value, TokenRejected)


def test_http_error_is_api_error_with_status() -> None:
    client, rec = admin(lambda r: httpx.Response(500, text="internal trouble"))
    with pytest.raises(ApiError) as info:
        client.version()
    assert info.value.status == 500
    assert "internal trouble" in str(info.value)
    assert len(rec.requests) == 1  # a 500 is an answer, not a busy server: no retry


def test_base_url_trailing_slash_is_dropped() -> None:
    client, rec = admin(lambda r: httpx.Response(200, json={"version": "1.7.12"}), url=ADMIN + "/")
    assert client.base_url == ADMIN
    assert client.version() == {"version": "1.7.12"}
    assert str(rec.last.url) == ADMIN + "/version"


# --- admin endpoints -----------------------------------------------------------------

DEPLOYMENTS = {
    "deployments": [
        {"id": "dp_other", "uri": "http://127.0.0.1:9999/"},
        {"id": "dp_lambda", "arn": "arn:aws:lambda:x"},
        {"id": "dp_ours", "uri": "http://127.0.0.1:9080/"},
    ]
}


def deployments_api(request: httpx.Request) -> httpx.Response:
    if request.url.path == "/deployments":
        return httpx.Response(200, json=DEPLOYMENTS)
    dep_id = request.url.path.rsplit("/", 1)[-1]
    return httpx.Response(200, json={"id": dep_id, "services": []})


@pytest.mark.parametrize("uri", ["http://127.0.0.1:9080", "http://127.0.0.1:9080/"])
def test_find_deployment_ignores_trailing_slash(uri: str) -> None:
    client, rec = admin(deployments_api)
    found = client.find_deployment(uri)
    assert found == {"id": "dp_ours", "services": []}
    assert rec.last.url.path == "/deployments/dp_ours"


def test_find_deployment_by_arn_and_missing() -> None:
    client, _ = admin(deployments_api)
    assert client.find_deployment("arn:aws:lambda:x") == {"id": "dp_lambda", "services": []}
    assert client.find_deployment("http://127.0.0.1:9081") is None


@pytest.mark.parametrize(("force", "dry_run"), [(False, False), (True, True), (True, False)])
def test_register_sends_force_and_dry_run(force: bool, dry_run: bool) -> None:
    client, rec = admin(lambda r: httpx.Response(201, json={"id": "dp_1", "services": []}))
    assert client.register("http://svc:9080", force=force, dry_run=dry_run)["id"] == "dp_1"
    sent = json.loads(rec.last.content)
    assert sent == {
        "uri": "http://svc:9080",
        "force": force,
        "breaking": force,  # force implies breaking; it is sent explicitly either way
        "dry_run": dry_run,
        "use_http_11": False,
    }
    assert rec.last.method == "POST"
    assert rec.last.url.path == "/deployments"


def test_discover_is_forced_dry_run() -> None:
    client, rec = admin(lambda r: httpx.Response(200, json={"services": []}))
    client.discover("http://svc:9080")
    sent = json.loads(rec.last.content)
    assert sent["force"] is True
    assert sent["dry_run"] is True


def test_register_error_names_uri() -> None:
    client, _ = admin(lambda r: httpx.Response(400, text="cannot reach"))
    with pytest.raises(ApiError, match="registering http://svc:9080 failed: HTTP 400"):
        client.register("http://svc:9080", force=False, dry_run=False)


def test_query() -> None:
    client, rec = admin(lambda r: httpx.Response(200, json={"rows": [{"n": 1}]}))
    assert client.query("SELECT 1 AS n") == [{"n": 1}]
    assert json.loads(rec.last.content) == {"query": "SELECT 1 AS n"}
    assert rec.last.headers["Accept"] == "application/json"
    assert rec.last.url.path == "/query"


def test_kill_patches_the_quoted_invocation() -> None:
    client, rec = admin(lambda r: httpx.Response(200))
    client.kill("inv_1/x")
    assert (rec.last.method, rec.last.url.raw_path) == ("PATCH", b"/invocations/inv_1%2Fx/kill")


def test_delete_deployment() -> None:
    client, rec = admin(lambda r: httpx.Response(202))
    client.delete_deployment("dp_1")
    assert rec.last.method == "DELETE"
    assert rec.last.url.path == "/deployments/dp_1"
    assert rec.last.url.params["force"] == "true"


def test_services() -> None:
    client, _ = admin(lambda r: httpx.Response(200, json={"services": [{"name": "Ticket"}]}))
    assert client.services() == [{"name": "Ticket"}]


# --- ingress -------------------------------------------------------------------------


def test_call_without_body_has_no_content_type() -> None:
    client, rec = ingress()
    client.call("Ticket", "get", key="e:1")
    req = rec.last
    assert req.method == "POST"
    assert "Content-Type" not in req.headers
    assert req.content == b""


def test_call_with_json_body() -> None:
    client, rec = ingress()
    client.call("Checkout", "process", {"ticketId": "e:1", "userId": "u"})
    req = rec.last
    assert req.url.path == "/Checkout/process"
    assert req.headers["Content-Type"] == "application/json"
    assert json.loads(req.content) == {"ticketId": "e:1", "userId": "u"}


def test_checkout_sends_the_contract_body_and_an_idempotency_key() -> None:
    client, rec = ingress()
    client.checkout("e:1", "alice", "card_decline", idempotency_key="k-7", timeout=5.0)
    req = rec.last
    assert (req.method, req.url.path) == ("POST", "/Checkout/process")
    assert json.loads(req.content) == {
        "ticketId": "e:1",
        "userId": "alice",
        "paymentMethodId": "card_decline",
    }
    assert req.headers["Idempotency-Key"] == "k-7"
    assert req.headers["Content-Type"] == "application/json"


def test_checkout_leaves_out_the_method_and_key_unless_given() -> None:
    client, rec = ingress()
    client.checkout("e:2", "bob")
    assert json.loads(rec.last.content) == {"ticketId": "e:2", "userId": "bob"}
    assert "Idempotency-Key" not in rec.last.headers


def test_call_with_empty_object_body_is_typed() -> None:
    client, rec = ingress()
    client.call("Ticket", "get", {}, key="t")
    assert rec.last.content == b"{}"
    assert rec.last.headers["Content-Type"] == "application/json"


def test_call_with_raw_bytes_and_headers() -> None:
    client, rec = ingress()
    client.call("Checkout", "process", raw=b"{oops", headers={"Idempotency-Key": "k1"})
    assert rec.last.content == b"{oops"
    assert rec.last.headers["Idempotency-Key"] == "k1"
    client.call("Ticket", "reserve", raw=b'"u"', key="t", headers={"Content-Type": "text/plain"})
    assert rec.last.headers["Content-Type"] == "text/plain"


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("e:1", b"/Ticket/e%3A1/get"),
        ("a/b", b"/Ticket/a%2Fb/get"),
        ("sp ace?#", b"/Ticket/sp%20ace%3F%23/get"),
        ("Zoë", b"/Ticket/Zo%C3%AB/get"),
    ],
)
def test_keys_are_url_quoted(key: str, path: bytes) -> None:
    client, rec = ingress()
    client.call("Ticket", "get", key=key)
    assert rec.last.url.raw_path == path


def test_call_returns_response_unchanged() -> None:
    client, _ = ingress(lambda r: httpx.Response(409, json={"message": "Ticket already sold"}))
    resp = client.call("Ticket", "reserve", "u", key="t")
    assert resp.status_code == 409


def test_ingress_token_is_sent() -> None:
    client, rec = ingress(token=TOKEN)
    client.call("Ticket", "get", key="t")
    assert rec.last.headers["Authorization"] == f"Bearer {TOKEN}"


# --- signatures ----------------------------------------------------------------------


def svc(name: str, *handlers: tuple[str, str], ty: str = "VirtualObject") -> dict[str, Any]:
    return {
        "name": name,
        "ty": ty,
        "handlers": [
            {
                "name": h,
                "ty": kind,
                "public": True,
                "input_description": "bytes",
                "output_description": "json",
            }
            for h, kind in handlers
        ],
    }


BEFORE = [
    svc("Ticket", ("get", "Shared"), ("reserve", "Exclusive")),
    svc("Legacy", ("old", "Exclusive")),
]


def test_signature_shape() -> None:
    sig = signature(BEFORE)
    assert set(sig) == {"Ticket", "Legacy"}
    assert sig["Ticket"]["ty"] == "VirtualObject"
    assert sig["Ticket"]["handlers"]["get"] == ["Shared", True, "bytes", "json", None]


def test_signature_sees_an_input_schema_come_or_go() -> None:
    """The ingress validates bodies by the schema: dropping it must re-register."""
    before = [svc("Ticket", ("get", "Shared"))]
    before[0]["handlers"][0]["input_json_schema"] = True
    after = [svc("Ticket", ("get", "Shared"))]
    assert signature_diff(signature(before), signature(after)) == ["~ handler Ticket/get"]


def test_signature_is_order_independent() -> None:
    assert signature(BEFORE) == signature(list(reversed(BEFORE)))


def test_signature_diff_same_is_empty() -> None:
    assert signature_diff(signature(BEFORE), signature(BEFORE)) == []


def test_signature_diff() -> None:
    after = [
        svc("Ticket", ("get", "Exclusive"), ("release", "Exclusive")),
        svc("Checkout", ("process", "Exclusive"), ("audit", "Shared"), ty="Service"),
    ]
    lines = signature_diff(signature(BEFORE), signature(after))
    assert lines == [
        "+ service Checkout (audit, process)",
        "- service Legacy",
        "+ handler Ticket/release",
        "- handler Ticket/reserve",
        "~ handler Ticket/get",
    ]


def test_signature_diff_service_without_handlers() -> None:
    lines = signature_diff({}, signature([{"name": "Empty", "ty": "Service"}]))
    assert lines == ["+ service Empty ()"]


def test_signature_diff_shows_service_type_change() -> None:
    before = signature([svc("Ticket", ("get", "Shared"), ty="Service")])
    after = signature([svc("Ticket", ("get", "Shared"), ty="VirtualObject")])
    assert before != after
    lines = signature_diff(before, after)
    assert lines
    assert any("Ticket" in line for line in lines)


def test_an_answer_that_is_not_json_is_an_api_error_naming_the_url() -> None:
    client, _ = admin(lambda r: httpx.Response(200, text="<html>Sign in</html>"))
    with pytest.raises(ApiError) as info:
        client.deployments()
    assert f"{ADMIN}/deployments" in info.value.message
    assert "not JSON" in info.value.message and "Sign in" in info.value.message
