"""A checkout caught mid-charge, for tests that act while it holds its seat."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import httpx

from ops.base.processes import poll_until
from ops.release.stack import Stack
from ops.testing.runs import gateway_latency


@contextmanager
def checkout_in_flight(
    stack: Stack, seat: str, user: str, method: str = "card_success", charge_ms: float = 1000
) -> Iterator[Future[httpx.Response]]:
    """A checkout whose charge the mock gateway keeps waiting `charge_ms`, yielded once it
    holds the seat (the hold comes first). On leaving, the checkout has answered and the
    gateway's latency is back to what it was."""
    body = {"ticketId": seat, "userId": user, "paymentMethodId": method}

    def held() -> bool:
        return bool(stack.ingress.call("Ticket", "get", key=seat).json()["status"] == "RESERVED")

    with gateway_latency(stack.env, charge_ms), ThreadPoolExecutor(1) as pool:
        answer = pool.submit(stack.ingress.call, "Checkout", "process", body)
        assert poll_until(held, 10.0), f"checkout of {seat} never held it"
        yield answer
        answer.result()
