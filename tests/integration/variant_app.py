"""The booking service plus one extra handler: a changed handler set for the
re-registration test."""

from __future__ import annotations

import restate
from restate import Context

from service.app import SERVICES

probe = restate.Service("Probe")


@probe.handler()
async def ping(ctx: Context) -> str:
    """Answers "pong"."""
    return "pong"


app = restate.app([*SERVICES, probe])
