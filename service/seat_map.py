"""SeatMap: a per-event view of seat statuses, fed by one-way notices from Tickets.

Nothing on a checkout's path waits on it: Tickets `send` their changes, and a version
number per seat keeps late or reordered notices from overwriting newer ones."""

from __future__ import annotations

import restate
from restate import ObjectContext, ObjectSharedContext
from restate.serde import BytesSerde

from service.models import SEAT_PREFIX, SeatEntry, SeatUpdate
from service.validation import check_id, parse_json

seat_map = restate.VirtualObject("SeatMap")


@seat_map.handler(ingress_private=True, state_preload=False)
async def update(ctx: ObjectContext, notice: SeatUpdate) -> None:
    """Record a seat's new status unless a newer one is already stored.

    Lazy state: an event's map holds one key per seat, and an update needs only one."""
    key = SEAT_PREFIX + notice.id
    current = await ctx.get(key, type_hint=SeatUpdate)
    if current is None or current.version < notice.version:
        ctx.set(key, notice)


@seat_map.handler(kind="shared", input_serde=BytesSerde())
async def get(ctx: ObjectSharedContext, body: bytes) -> list[dict[str, str]]:
    """All seats of the event seen so far, sorted by id; accepts an empty body or `{}`."""
    check_id("eventId", ctx.key())
    if body.strip():
        parse_json(body)
    seats: list[dict[str, str]] = []
    for key in sorted(await ctx.state_keys()):
        if key.startswith(SEAT_PREFIX):
            row = await ctx.get(key, type_hint=SeatUpdate)
            if row is not None:
                seats.append(SeatEntry(id=row.id, status=row.status).model_dump(mode="json"))
    return seats
