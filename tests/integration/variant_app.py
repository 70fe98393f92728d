"""The booking service plus one extra handler: a changed handler set for the
re-registration test."""

from __future__ import annotations

import restate
from restate import Context

from service.checkout import checkout
from service.seat_map import seat_map
from service.ticket import ticket

probe = restate.Service("Probe")


@probe.handler()
async def ping(ctx: Context) -> str:
    """Answers "pong"."""
    return "pong"


app = restate.app([ticket, checkout, seat_map, probe])
