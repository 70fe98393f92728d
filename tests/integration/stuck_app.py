"""A test-only service whose handler fails with a retryable error on every attempt: an
invocation of it backs off forever, the stuck work `invoke audit` must report."""

from __future__ import annotations

import restate
from restate import Context

stuck = restate.Service("Stuck")


@stuck.handler()
async def forever(ctx: Context, seat: str) -> str:
    """Never succeeds: every attempt raises an error Restate retries."""
    raise RuntimeError(f"stuck on purpose for {seat}")


app = restate.app([stuck])
