"""Signing: with request signing on, the service refuses calls that did not come through
Restate."""

from __future__ import annotations

import httpx

from ops.chaos.base import (
    ChaosContext,
)
from ops.testing.checks import Skip, expect


def unsigned(cx: ChaosContext) -> str:
    """With request signing on, the service refuses calls that did not come via Restate."""
    if not cx.env.settings.service.signing:
        raise Skip("request signing is off in this environment")
    if cx.env.service_mode == "connect":
        raise Skip("the service has no URL of its own in connect mode")
    svc = cx.stack.release.uri(cx.stack.service_instance()).rstrip("/")
    headers = {"content-type": "application/vnd.restate.invocation.v1"}
    manifest = {"accept": "application/vnd.restate.endpointmanifest.v1+json"}
    forged = {**headers, "x-restate-signature-scheme": "v1", "x-restate-jwt-v1": "forged"}
    refused: list[int] = []
    with httpx.Client(timeout=10.0) as http:
        for method, path, hdrs in [
            ("POST", "/invoke/Ticket/get", headers),
            ("POST", "/invoke/Checkout/process", headers),
            ("POST", "/invoke/Ticket/reserve", forged),
            ("GET", "/discover", manifest),
        ]:
            code = http.request(method, f"{svc}{path}", headers=hdrs).status_code
            expect(code == 401, f"unsigned {method} {svc}{path} answered {code}")
            refused.append(code)
    client = cx.client()
    try:
        t = cx.seat("signed")
        via = client.call("Ticket", "get", key=t, timeout=30)
        expect(via.status_code == 200, f"Ticket/get through the ingress answered {via.status_code}")
    finally:
        client.close()
    return f"{len(refused)} unsigned or forged calls to {svc} refused with 401; ingress 200"
