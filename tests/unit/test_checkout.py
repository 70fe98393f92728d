"""The saga's compensation loop (service.checkout._compensate), without a server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from restate import TerminalError

from service.checkout import _cancelled, _compensate, _sell_seat, _take_seat


def test_every_compensation_runs_in_reverse_and_the_first_failure_is_raised() -> None:
    ran: list[str] = []

    def step(name: str, fails: bool = False) -> Callable[[], Awaitable[object]]:
        async def undo() -> None:
            ran.append(name)
            if fails:
                raise TerminalError(f"{name} failed", status_code=500)

        return undo

    # Registered in action order: release, refund, notify; refund and notify fail.
    steps = [step("release"), step("refund", fails=True), step("notify", fails=True)]
    with pytest.raises(TerminalError, match="notify failed"):
        asyncio.run(_compensate(steps))
    assert ran == ["notify", "refund", "release"]


def test_compensations_that_succeed_raise_nothing() -> None:
    ran: list[int] = []

    async def undo() -> None:
        ran.append(1)

    asyncio.run(_compensate([undo, undo]))
    assert ran == [1, 1]


class _Seat:
    """Stands in for the Context's `object_call`: records each call to the Ticket and
    answers from a script (a TerminalError in the script is raised)."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, str, bytes]] = []

    async def object_call(self, handler: object, key: str, arg: bytes) -> object:
        self.calls.append((getattr(handler, "__name__", ""), key, arg))
        answer = self.answers.pop(0) if self.answers else {}
        if isinstance(answer, TerminalError):
            raise answer
        return answer


HOLDER = b'{"userId": "u", "holdId": "inv_1"}'


def _cancel() -> TerminalError:
    return TerminalError("cancelled", 409)


def _names(seat: _Seat) -> list[str]:
    return [name for name, key, arg in seat.calls if key == "e:A1" and arg == HOLDER]


def test_a_cancelled_hold_is_released_by_its_hold_id() -> None:
    seat = _Seat(_cancel())
    with pytest.raises(TerminalError, match="cancelled"):
        asyncio.run(_take_seat(seat, "e:A1", HOLDER))  # type: ignore[arg-type]
    assert _names(seat) == ["hold", "release"]


def test_a_refused_hold_releases_nothing() -> None:
    seat = _Seat(TerminalError("Ticket already sold", 409))
    with pytest.raises(TerminalError, match="already sold"):
        asyncio.run(_take_seat(seat, "e:A1", HOLDER))  # type: ignore[arg-type]
    assert _names(seat) == ["hold"]


def test_a_cancelled_confirm_is_sent_again_and_the_seat_decides() -> None:
    sold = _Seat(_cancel(), {"status": "SOLD"})
    asyncio.run(_sell_seat(sold, "e:A1", HOLDER))  # type: ignore[arg-type]
    assert _names(sold) == ["confirm", "confirm"]

    freed = _Seat(_cancel(), TerminalError("Ticket is not reserved", 409))
    with pytest.raises(TerminalError, match="not reserved"):
        asyncio.run(_sell_seat(freed, "e:A1", HOLDER))  # type: ignore[arg-type]


def test_only_the_sdks_cancel_signal_counts_as_a_cancel() -> None:
    assert _cancelled(_cancel())
    assert not _cancelled(TerminalError("Ticket is currently reserved", 409))
    assert not _cancelled(TerminalError("cancelled", 500))
