"""A no-op Restate service, registered only while `invoke bench` measures the ceiling
that one call through restate-server and the Python SDK costs on this machine."""

from __future__ import annotations

import restate
from restate import Context

bench = restate.Service("Bench")


@bench.handler()
async def noop(ctx: Context, body: dict[str, object] | None = None) -> str:
    """Does nothing; answers "ok"."""
    return "ok"


app = restate.app([bench])
