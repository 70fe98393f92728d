"""Payment gateway client: one idempotent charge, retried with bounded backoff."""

from __future__ import annotations

import asyncio
import logging
import time

import httpx

from service.config import Settings
from service.models import ChargeOutcome

log = logging.getLogger("nexus.payment")

_client: httpx.AsyncClient | None = None


def _http() -> httpx.AsyncClient:
    """One pooled client per process; created on first use inside the event loop."""
    global _client
    if _client is None:
        _client = httpx.AsyncClient(limits=httpx.Limits(max_connections=256))
    return _client


def is_retryable(status: int) -> bool:
    """Gateway answers worth another attempt: 5xx and 429."""
    return status >= 500 or status == 429


def backoff_delays(attempts: int, base_s: float) -> list[float]:
    """Exponential pauses between attempts: base, 2*base, 4*base, ..."""
    return [base_s * (2**i) for i in range(max(0, attempts - 1))]


async def charge(
    settings: Settings,
    *,
    idempotency_key: str,
    ticket_id: str,
    user_id: str,
    payment_method_id: str,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ChargeOutcome:
    """Charge once. Decline and exhausted retries are outcomes, not exceptions."""
    body = {
        "paymentMethodId": payment_method_id,
        "ticketId": ticket_id,
        "userId": user_id,
        "amount": 5000,
        "currency": "EUR",
    }
    headers = {"Idempotency-Key": idempotency_key}
    url = f"{settings.gateway_url}/charges"
    client = httpx.AsyncClient(transport=transport) if transport else _http()
    delays = backoff_delays(settings.payment_attempts, settings.payment_backoff_s)
    last = ""
    started = time.monotonic()
    for attempt in range(1, settings.payment_attempts + 1):
        try:
            resp = await client.post(
                url, json=body, headers=headers, timeout=settings.payment_timeout_s
            )
        except httpx.TimeoutException:
            last = f"no answer within {settings.payment_timeout_s:g}s"
        except httpx.TransportError as exc:
            last = f"unreachable: {type(exc).__name__}"
        else:
            if resp.status_code == 200:
                charge_id = str(resp.json().get("id", ""))
                return ChargeOutcome(status="succeeded", charge_id=charge_id, attempts=attempt)
            if resp.status_code == 402:
                return ChargeOutcome(status="declined", detail=_reason(resp), attempts=attempt)
            if not is_retryable(resp.status_code):
                # 400/401/404...: the gateway refuses the request itself (misconfiguration).
                return ChargeOutcome(
                    status="gateway_error",
                    detail=f"gateway rejected the request: HTTP {resp.status_code}",
                    attempts=attempt,
                )
            last = f"HTTP {resp.status_code}"
        log.warning("charge attempt %d/%d failed: %s", attempt, settings.payment_attempts, last)
        if attempt <= len(delays):
            await asyncio.sleep(delays[attempt - 1])
    elapsed = time.monotonic() - started
    return ChargeOutcome(
        status="gateway_error",
        detail=f"{last} after {settings.payment_attempts} attempts in {elapsed:.1f}s",
        attempts=settings.payment_attempts,
    )


async def refund(
    settings: Settings, *, idempotency_key: str, transport: httpx.AsyncBaseTransport | None = None
) -> str:
    """Refund the charge made with `idempotency_key`; retried by Restate until it answers."""
    client = httpx.AsyncClient(transport=transport) if transport else _http()
    resp = await client.post(
        f"{settings.gateway_url}/charges/{idempotency_key}/refund",
        timeout=settings.payment_timeout_s,
    )
    if resp.status_code == 404:
        return "nothing to refund"
    resp.raise_for_status()
    return "refunded"


def _reason(resp: httpx.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return f"HTTP {resp.status_code}"
    if isinstance(data, dict):
        return str(data.get("error") or data.get("message") or f"HTTP {resp.status_code}")
    return f"HTTP {resp.status_code}"
