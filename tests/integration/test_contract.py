"""Every line of DESIGN.md's HTTP contract, through a real restate-server's ingress."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from ops.base.processes import poll_until
from ops.clients.admin import GatewayClient, IngressClient
from ops.release.stack import Stack
from service.seat_map import shard_key
from tests.integration.inflight import checkout_in_flight

pytestmark = pytest.mark.integration


def seat(event: str = "itest") -> str:
    return f"{event}-{uuid.uuid4().hex[:8]}:s{uuid.uuid4().hex[:6]}"


def checkout(stack: Stack, ticket: str, user: str, method: str | None = None) -> httpx.Response:
    body: dict[str, Any] = {"ticketId": ticket, "userId": user}
    if method is not None:
        body["paymentMethodId"] = method
    return stack.ingress.call("Checkout", "process", body)


def ticket(stack: Stack, ticket_id: str) -> dict[str, Any]:
    resp = stack.ingress.call("Ticket", "get", key=ticket_id)
    assert resp.status_code == 200, resp.text
    data: dict[str, Any] = resp.json()
    return data


def charges(stack: Stack, ticket_id: str) -> list[dict[str, Any]]:
    resp = httpx.get(f"{stack.env.gateway.url}/charges", params={"ticketId": ticket_id})
    rows: list[dict[str, Any]] = resp.json()["charges"]
    return rows


def seat_map(stack: Stack, event: str) -> Any:
    resp = stack.ingress.call("SeatMap", "get", key=event)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_happy_path_sells_the_seat_to_the_buyer(stack: Stack) -> None:
    t = seat()
    resp = checkout(stack, t, "alice")
    assert resp.status_code == 200
    assert resp.json() == "Booking Confirmed"
    state = ticket(stack, t)
    assert state == {"status": "SOLD", "reservedBy": "alice", "reservedUntil": None}
    assert [c["userId"] for c in charges(stack, t)] == ["alice"]


def test_payment_method_defaults_to_card_success(stack: Stack) -> None:
    t = seat()
    assert checkout(stack, t, "bob").status_code == 200
    assert charges(stack, t)[0]["paymentMethodId"] == "card_success"


def test_decline_answers_402_and_releases_the_seat(stack: Stack) -> None:
    t = seat()
    resp = checkout(stack, t, "carol", "card_decline")
    assert resp.status_code == 402
    assert "Payment failed" in resp.text and "Payment declined" in resp.text
    assert ticket(stack, t)["status"] == "AVAILABLE"
    assert charges(stack, t) == []


def test_unknown_payment_method_is_declined(stack: Stack) -> None:
    t = seat()
    resp = checkout(stack, t, "dave", "card_stolen")
    assert resp.status_code == 402
    assert ticket(stack, t)["status"] == "AVAILABLE"


def test_gateway_error_answers_502_and_releases_the_seat_within_seconds(stack: Stack) -> None:
    t = seat()
    started = time.monotonic()
    resp = checkout(stack, t, "erin", "card_error")
    took = time.monotonic() - started
    assert resp.status_code in (502, 503)
    assert "Payment failed" in resp.text and "Gateway timeout" in resp.text
    assert ticket(stack, t)["status"] == "AVAILABLE"
    assert took < 10, f"gateway error took {took:.1f}s to surface"


def test_double_booking_answers_409_already_sold(stack: Stack) -> None:
    t = seat()
    assert checkout(stack, t, "frank").status_code == 200
    resp = checkout(stack, t, "grace")
    assert resp.status_code == 409
    assert "Ticket already sold" in resp.text
    assert ticket(stack, t)["reservedBy"] == "frank"
    assert len(charges(stack, t)) == 1


def test_reserved_seat_answers_409_currently_reserved(stack: Stack) -> None:
    t = seat()
    assert stack.ingress.call("Ticket", "reserve", "heidi", key=t).status_code == 200
    resp = checkout(stack, t, "ivan")
    assert resp.status_code == 409
    assert "Ticket is currently reserved" in resp.text
    assert ticket(stack, t)["reservedBy"] == "heidi"


def test_fresh_seat_is_available(stack: Stack) -> None:
    assert ticket(stack, seat()) == {
        "status": "AVAILABLE",
        "reservedBy": None,
        "reservedUntil": None,
    }


def test_get_accepts_an_empty_body_and_an_empty_object(stack: Stack) -> None:
    t = seat()
    empty = stack.ingress.call("Ticket", "get", key=t)
    braces = stack.ingress.call("Ticket", "get", {}, key=t)
    assert empty.status_code == braces.status_code == 200
    assert (
        empty.json()
        == braces.json()
        == {"status": "AVAILABLE", "reservedBy": None, "reservedUntil": None}
    )


def test_twenty_concurrent_buyers_one_winner(stack: Stack) -> None:
    t = seat()
    users = [f"buyer-{i}" for i in range(20)]

    def buy(user: str) -> tuple[str, int, str]:
        client = IngressClient(stack.env.ingress.url)
        try:
            resp = client.call("Checkout", "process", {"ticketId": t, "userId": user})
            return user, resp.status_code, resp.text
        finally:
            client.close()

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(buy, users))
    winners = [u for u, code, _ in answers if code == 200]
    losers = [(code, text) for _, code, text in answers if code != 200]
    assert len(winners) == 1, answers
    assert all(code == 409 for code, _ in losers), losers
    assert all("already sold" in text or "currently reserved" in text for _, text in losers)
    state = ticket(stack, t)
    assert state["status"] == "SOLD" and state["reservedBy"] == winners[0]
    assert len(charges(stack, t)) == 1


def test_seat_map_lists_the_event_off_the_critical_path(stack: Stack) -> None:
    event = f"map-{uuid.uuid4().hex[:8]}"
    sold, declined = f"{event}:a1", f"{event}:a2"
    assert checkout(stack, sold, "judy").status_code == 200
    assert checkout(stack, declined, "karl", "card_decline").status_code == 402
    wanted = [{"id": sold, "status": "SOLD"}, {"id": declined, "status": "AVAILABLE"}]
    poll_until(lambda: seat_map(stack, event) == wanted, 10.0)
    assert seat_map(stack, event) == wanted


def test_seat_map_merges_every_shard_sorted(stack: Stack) -> None:
    event = f"shards-{uuid.uuid4().hex[:8]}"
    seats = [f"{event}:r{n:02d}" for n in range(12)]
    assert len({shard_key(s) for s in seats}) > 1  # the read really spans shards
    for n, s in enumerate(reversed(seats)):
        resp = stack.ingress.call("Ticket", "reserve", {"userId": f"u{n}"}, key=s)
        assert resp.status_code == 200, resp.text
    wanted = [{"id": s, "status": "RESERVED"} for s in seats]
    poll_until(lambda: seat_map(stack, event) == wanted, 10.0)
    assert seat_map(stack, event) == wanted


def test_seat_without_colon_belongs_to_global(stack: Stack) -> None:
    t = f"solo-{uuid.uuid4().hex}"
    assert checkout(stack, t, "liam").status_code == 200
    poll_until(lambda: {"id": t, "status": "SOLD"} in seat_map(stack, "global"), 10.0)
    assert {"id": t, "status": "SOLD"} in seat_map(stack, "global")


BAD_BODIES = [
    (b"{not json", "JSON"),
    (b"[]", "JSON object"),
    (b'"just a string"', "JSON object"),
    (b'{"userId": "u"}', "ticketId"),
    (b'{"ticketId": "T"}', "userId"),
    (b'{"ticketId": "", "userId": "u"}', "ticketId"),
    (b'{"ticketId": "   ", "userId": "u"}', "ticketId"),
    (b'{"ticketId": 7, "userId": "u"}', "ticketId"),
    (b'{"ticketId": "T", "userId": null}', "userId"),
    (b'{"ticketId": "T", "userId": ["u"]}', "userId"),
    (b'{"ticketId": "T", "userId": "u", "paymentMethodId": 3}', "paymentMethodId"),
    (b'{"ticketId": "T", "userId": "u", "paymentMethodId": ""}', "paymentMethodId"),
    (b'{"ticketId": "' + b"x" * 5000 + b'", "userId": "u"}', "ticketId"),
]


@pytest.mark.parametrize(("raw", "field"), BAD_BODIES)
def test_bad_input_is_a_quick_400_naming_the_field_and_changes_nothing(
    stack: Stack, raw: bytes, field: str
) -> None:
    started = time.monotonic()
    resp = stack.ingress.call("Checkout", "process", raw=raw.replace(b'"T"', b'"itest-bad:t1"'))
    assert time.monotonic() - started < 3
    assert resp.status_code == 400, resp.text
    assert field in resp.json()["message"]
    assert ticket(stack, "itest-bad:t1")["status"] == "AVAILABLE"
    assert charges(stack, "itest-bad:t1") == []


def test_bad_input_to_ticket_handlers_is_400(stack: Stack) -> None:
    t = seat()
    for handler, raw, named in (
        ("reserve", b"", "body"),  # refused by the ingress itself: typed but empty
        ("reserve", b"42", "userId"),
        ("reserve", b'{"userId": ""}', "userId"),
        ("confirm", b'{"userId": "u", "holdId": 7}', "holdId"),
        ("release", b'{"holdId": ""}', "holdId"),
        ("get", b"{oops", "JSON"),
    ):
        resp = stack.ingress.call(
            "Ticket", handler, key=t, raw=raw, headers={"Content-Type": "application/json"}
        )
        assert resp.status_code == 400, (handler, raw, resp.text)
        assert named in resp.json()["message"], (handler, raw, resp.text)
    assert ticket(stack, t)["status"] == "AVAILABLE"


def test_reserve_is_idempotent_for_the_holder_and_confirm_release_work(stack: Stack) -> None:
    t = seat()
    first = stack.ingress.call("Ticket", "reserve", "mia", key=t).json()
    again = stack.ingress.call("Ticket", "reserve", {"userId": "mia"}, key=t).json()
    assert first == again and first["status"] == "RESERVED" and first["reservedUntil"] > 0
    released = stack.ingress.call("Ticket", "release", key=t)
    assert released.status_code == 200 and released.json()["status"] == "AVAILABLE"
    stack.ingress.call("Ticket", "reserve", "noah", key=t)
    confirmed = stack.ingress.call("Ticket", "confirm", "noah", key=t)
    assert confirmed.json() == {"status": "SOLD", "reservedBy": "noah", "reservedUntil": None}
    assert stack.ingress.call("Ticket", "release", key=t).status_code == 409


def test_hold_expires_and_a_late_confirm_is_refused(stack: Stack) -> None:
    t = seat()
    held = stack.ingress.call("Ticket", "reserve", "olga", key=t).json()
    # A cleanup naming another hold, or arriving before expiry, frees nothing.
    stack.ingress.call("Ticket", "cleanup", {"holdId": "not-this-hold"}, key=t)
    stack.ingress.call("Ticket", "cleanup", key=t)
    assert ticket(stack, t)["status"] == "RESERVED"
    wait = held["reservedUntil"] / 1000 - time.time() + 1.5
    deadline = time.monotonic() + wait + 5
    time.sleep(max(0.0, wait))
    while ticket(stack, t)["status"] != "AVAILABLE" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ticket(stack, t)["status"] == "AVAILABLE"
    late = stack.ingress.call("Ticket", "confirm", "olga", key=t)
    assert late.status_code == 409
    assert ticket(stack, t)["status"] == "AVAILABLE"


def test_confirm_after_expiry_before_the_timer_is_refused(stack: Stack) -> None:
    """A confirm at the end of the hold is refused, whether or not the timer ran yet."""
    t = seat()
    held = stack.ingress.call("Ticket", "reserve", "pia", key=t).json()
    time.sleep(max(0.0, held["reservedUntil"] / 1000 - time.time() + 0.05))
    resp = stack.ingress.call("Ticket", "confirm", "pia", key=t)
    assert resp.status_code == 409
    assert ticket(stack, t)["status"] == "AVAILABLE"


def test_a_second_checkout_by_the_same_user_is_refused_and_not_charged(stack: Stack) -> None:
    """A hold belongs to one checkout: a double click must not pay twice for one seat."""
    t = seat()
    with checkout_in_flight(stack, t, "quinn", "card_success") as first:
        second = checkout(stack, t, "quinn")
        assert second.status_code == 409, second.text
        assert "Ticket is currently reserved" in second.text
    assert first.result().status_code == 200
    assert ticket(stack, t) == {"status": "SOLD", "reservedBy": "quinn", "reservedUntil": None}
    assert len(charges(stack, t)) == 1


def test_a_public_confirm_cannot_sell_a_seat_mid_checkout(stack: Stack) -> None:
    t = seat()
    with checkout_in_flight(stack, t, "rosa", "card_decline") as pending:
        for body in (None, "rosa", {"userId": "rosa", "holdId": "guessed"}):
            resp = stack.ingress.call("Ticket", "confirm", body, key=t)
            assert resp.status_code == 409 and "currently reserved" in resp.text, (body, resp.text)
    assert pending.result().status_code == 402
    assert ticket(stack, t)["status"] == "AVAILABLE"
    assert charges(stack, t) == []


def test_a_hold_released_mid_checkout_refunds_the_charge(stack: Stack) -> None:
    """An operator's release frees the seat; the saga cannot confirm, so it refunds."""
    t = seat()
    with checkout_in_flight(stack, t, "sam", "card_success") as pending:
        released = stack.ingress.call("Ticket", "release", key=t)
        assert released.json()["status"] == "AVAILABLE"
    resp = pending.result()
    assert resp.status_code == 409 and "not reserved" in resp.text, resp.text
    assert ticket(stack, t)["status"] == "AVAILABLE"
    assert [c["refunded"] for c in charges(stack, t)] == [True]


def test_a_checkout_cancelled_mid_charge_refunds_and_frees_the_seat(stack: Stack) -> None:
    """An operator cancels a checkout while it charges: the saga answers 409, the charge
    (landed or still in flight) is refunded or voided, and the seat is free again."""
    t = seat()
    gateway = GatewayClient(stack.env.gateway.url)
    charges_sent = gateway.attempts()
    with checkout_in_flight(stack, t, "cyd", "card_success") as pending:
        poll_until(lambda: gateway.attempts() > charges_sent, 10.0)  # the charge is out
        holds = stack.admin.query(
            "SELECT invoked_by_id FROM sys_invocation WHERE target_service_name = 'Ticket'"
            f" AND target_service_key = '{t}' AND target_handler_name = 'hold'"
        )
        assert len(holds) == 1, holds
        stack.admin.cancel(holds[0]["invoked_by_id"])
    resp = pending.result()
    assert resp.status_code == 409 and "Checkout cancelled during payment" in resp.text
    assert ticket(stack, t)["status"] == "AVAILABLE"
    time.sleep(1.5)  # past the slow charge: one still in flight would have landed by now
    assert gateway.live_charges(t) == []
    gateway.close()


def test_the_holders_reservation_passes_to_their_checkout(stack: Stack) -> None:
    """Reserve, then pay: the checkout takes the holder's reservation over, deadline and all."""
    t = seat()
    assert stack.ingress.call("Ticket", "reserve", "tina", key=t).json()["reservedUntil"] > 0
    assert checkout(stack, t, "tina").status_code == 200
    assert ticket(stack, t) == {"status": "SOLD", "reservedBy": "tina", "reservedUntil": None}


def _ticket_calls(stack: Stack, idempotency_key: str) -> int:
    """Calls to a Ticket in the journal of the checkout sent with `idempotency_key`."""
    rows = stack.admin.query(
        f"SELECT id FROM sys_invocation WHERE idempotency_key = '{idempotency_key}'"
    )
    assert len(rows) == 1, rows
    calls = stack.admin.query(
        f"SELECT entry_type FROM sys_journal WHERE id = '{rows[0]['id']}'"
        " AND entry_type = 'Command: Call'"
    )
    return len(calls)


def test_a_seat_known_sold_is_refused_without_its_ticket_in_the_same_words(stack: Stack) -> None:
    t = seat()
    # Sold outside Checkout, so the service learns it from the Ticket's own answer.
    stack.ingress.call("Ticket", "reserve", "olga", key=t)
    assert stack.ingress.call("Ticket", "confirm", "olga", key=t).status_code == 200
    keys = [f"itest-sold-{uuid.uuid4().hex}" for _ in range(2)]
    first, second = (
        stack.ingress.call(
            "Checkout",
            "process",
            {"ticketId": t, "userId": f"late-{n}"},
            headers={"Idempotency-Key": key},
        )
        for n, key in enumerate(keys)
    )
    assert first.status_code == second.status_code == 409
    assert first.json() == second.json()  # the Ticket's 409 and the set's are one body
    assert "Ticket already sold" in second.json()["message"]
    assert [_ticket_calls(stack, key) for key in keys] == [1, 0]
    assert ticket(stack, t)["reservedBy"] == "olga" and charges(stack, t) == []
