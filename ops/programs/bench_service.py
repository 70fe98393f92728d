"""Bench-only Restate services, registered only while `invoke bench` measures.

`Bench/noop` is the ceiling: what one call through restate-server and the Python SDK costs
on this machine. `Bench/saga` is a checkout's Restate skeleton and nothing else: a call that
takes a seat (state read and write), a journaled no-op step, a call that sells it (state
read and write, one notice to a lazy-state shard). Its rate is the most a checkout shaped
like ours can reach here; the gap between it and the real checkout is our own code."""

from __future__ import annotations

import json

import restate
from restate import Context, ObjectContext, RunOptions
from restate.serde import BytesSerde, JsonSerde

from service.gc_tuning import tune_gc
from service.seat_map import shard_key

bench = restate.Service("Bench")
seat = restate.VirtualObject("BenchSeat", ingress_private=True)
shard = restate.VirtualObject("BenchShard", ingress_private=True)

_RAW = BytesSerde()
_STEP = RunOptions[int](serde=JsonSerde[int]())


@bench.handler()
async def noop(ctx: Context, body: dict[str, object] | None = None) -> str:
    """Does nothing; answers "ok"."""
    return "ok"


@bench.handler(input_serde=_RAW)
async def saga(ctx: Context, body: bytes) -> str:
    """Take, step, sell for the seat named by the body (a JSON string); answers "ok"."""
    try:
        key = json.loads(body)
    except ValueError:
        key = None
    if not isinstance(key, str) or not key:
        raise restate.TerminalError("body must be a non-empty JSON string", status_code=400)
    await ctx.object_call(take, key=key, arg=b"")
    await ctx.run_typed("step", _step, _STEP)
    await ctx.object_call(sell, key=key, arg=b"")
    return "ok"


async def _step() -> int:
    return 1


@seat.handler(input_serde=_RAW, output_serde=_RAW)
async def take(ctx: ObjectContext, body: bytes) -> bytes:
    """Like `Ticket/hold`: read the seat's state, write it."""
    ctx.set("status", (await ctx.get("status", type_hint=int) or 0) + 1)
    return b""


@seat.handler(input_serde=_RAW, output_serde=_RAW)
async def sell(ctx: ObjectContext, body: bytes) -> bytes:
    """Like `Ticket/confirm`: read, write, and send one notice to the seat's shard."""
    ctx.set("status", (await ctx.get("status", type_hint=int) or 0) + 1)
    ctx.object_send(note, key=shard_key(ctx.key()), arg=ctx.key().encode())
    return b""


@shard.handler(input_serde=_RAW, output_serde=_RAW, state_preload=False)
async def note(ctx: ObjectContext, body: bytes) -> bytes:
    """Like `SeatMapShard/update`: one lazy read and one write under the seat's key."""
    key = "seat:" + body.decode()
    ctx.set(key, (await ctx.get(key, type_hint=int) or 0) + 1)
    return b""


app = restate.app([bench, seat, shard])
tune_gc()  # the same process tuning as the booking service, for a fair ceiling
