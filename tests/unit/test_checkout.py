"""The saga's compensation loop (service.checkout._compensate), without a server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from restate import TerminalError

from service.checkout import _compensate


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
