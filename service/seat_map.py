"""SeatMap: a per-event view of seat statuses, fed by one-way notices from Tickets.

Nothing on a checkout's path waits on it: Tickets `send` their changes, and a version
number per seat keeps late or reordered notices from overwriting newer ones.

An event's seats are spread over `SHARDS` `SeatMapShard` objects by a stable hash of the
seat id. One object applies its notices one at a time, about 50/s under a checkout peak,
so a single object per event fell further behind the longer a peak lasted (20 s behind
after 20 s at 290 checkouts/s). The shards apply notices in parallel, and
`SeatMap/{event}/get` reads them all and merges.
`SHARDS` is part of the stored layout: changing it hides the seats already recorded."""

from __future__ import annotations

import zlib
from typing import Any

import restate
from restate import ObjectContext, ObjectSharedContext
from restate.serde import BytesSerde

from service.models import SEAT_PREFIX, SeatEntry, SeatUpdate, event_of
from service.validation import ANY_CONTENT_TYPE, accept_any_body, check_id, check_read_body

SHARDS = 8

seat_map = restate.VirtualObject("SeatMap")
seat_map_shard = restate.VirtualObject("SeatMapShard", ingress_private=True)


def shard_key(ticket_id: str) -> str:
    """The `SeatMapShard` that records `ticket_id`: `<event>#<n>`, n from a CRC32 of the id
    (stable across processes, unlike `hash`)."""
    return _shard_of(event_of(ticket_id), zlib.crc32(ticket_id.encode()) % SHARDS)


def _shard_of(event: str, index: int) -> str:
    return f"{event}#{index}"


@seat_map_shard.handler(state_preload=False)
async def update(ctx: ObjectContext, notice: SeatUpdate) -> None:
    """Record a seat's new status unless a newer one is already stored.

    Lazy state: a shard holds one key per seat, and an update needs only one."""
    key = SEAT_PREFIX + notice.id
    current = await ctx.get(key, type_hint=SeatUpdate)
    if current is None or current.version < notice.version:
        ctx.set(key, notice)


@seat_map_shard.handler(kind="shared")
async def rows(ctx: ObjectSharedContext) -> list[dict[str, Any]]:
    """Every seat this shard has recorded, as `{"id", "status"}` rows."""
    found: list[dict[str, Any]] = []
    for key in await ctx.state_keys():
        if key.startswith(SEAT_PREFIX):
            row = await ctx.get(key, type_hint=SeatUpdate)
            if row is not None:
                found.append(SeatEntry(id=row.id, status=row.status).model_dump(mode="json"))
    return found


@seat_map.handler(kind="shared", accept=ANY_CONTENT_TYPE, input_serde=BytesSerde())
async def get(ctx: ObjectSharedContext, body: bytes) -> list[dict[str, Any]]:
    """All seats of the event seen so far, sorted by id; accepts an empty body under any
    content type, or `{}`."""
    event = check_id("eventId", ctx.key())
    check_read_body(ctx, body)
    calls = [ctx.object_call(rows, key=_shard_of(event, n), arg=None) for n in range(SHARDS)]
    await restate.gather(*calls)
    seats = [row for call in calls for row in await call]
    return sorted(seats, key=lambda row: str(row["id"]))


accept_any_body(seat_map, "get")
