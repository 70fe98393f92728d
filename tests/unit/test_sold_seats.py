"""The set of seats known SOLD (service/sold_seats.py) and what feeds it in Checkout."""

from __future__ import annotations

import asyncio

import pytest
from restate import TerminalError

from service import checkout as checkout_module
from service.checkout import _take_seat
from service.sold_seats import SoldSeats


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_sold_seat_is_known_until_its_time_runs_out() -> None:
    clock = _Clock()
    seats = SoldSeats(cap=10, ttl_s=60.0, clock=clock)
    assert not seats.known_sold("e:1")
    seats.add("e:1")
    assert seats.known_sold("e:1")
    clock.now += 59.9
    assert seats.known_sold("e:1")  # a hit does not extend it: a reset seat comes back
    clock.now += 0.1
    assert not seats.known_sold("e:1") and len(seats) == 0


def test_the_set_keeps_at_most_cap_seats_dropping_the_least_recently_used() -> None:
    seats = SoldSeats(cap=3)
    for n in range(3):
        seats.add(f"e:{n}")
    assert seats.known_sold("e:0")  # used: now the newest
    seats.add("e:3")
    assert len(seats) == 3
    assert not seats.known_sold("e:1")  # the least recently used went
    assert all(seats.known_sold(f"e:{n}") for n in (0, 2, 3))
    seats.clear()
    assert len(seats) == 0


@pytest.mark.parametrize(("cap", "ttl"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_a_bad_cap_or_lifetime_is_refused(cap: int, ttl: float) -> None:
    with pytest.raises(ValueError, match=r"cap|ttl_s"):
        SoldSeats(cap=cap, ttl_s=ttl)


class _Seat:
    """The Context's `object_call`, answering with one error."""

    def __init__(self, error: TerminalError) -> None:
        self.error = error

    async def object_call(self, handler: object, key: str, arg: bytes) -> object:
        raise self.error


@pytest.mark.parametrize(
    ("error", "remembered"),
    [
        (TerminalError("Ticket already sold", 409), True),
        (TerminalError("Ticket is currently reserved", 409), False),  # may come free again
        (TerminalError("Ticket already sold", 500), False),
    ],
)
def test_only_the_tickets_already_sold_answer_feeds_the_set(
    monkeypatch: pytest.MonkeyPatch, error: TerminalError, remembered: bool
) -> None:
    seats = SoldSeats()
    monkeypatch.setattr(checkout_module, "sold_seats", seats)
    with pytest.raises(TerminalError):
        asyncio.run(_take_seat(_Seat(error), "e:A1", b"{}"))  # type: ignore[arg-type]
    assert seats.known_sold("e:A1") is remembered
