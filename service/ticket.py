"""Ticket: one virtual object per seat. Restate serializes calls per key, so a seat
moves AVAILABLE → RESERVED → SOLD exactly once, however many buyers race for it."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import restate
from restate import ObjectContext, ObjectSharedContext, RunOptions, TerminalError
from restate.serde import BytesSerde, JsonSerde

from service.config import settings
from service.models import TICKET, SeatUpdate, TicketState, TicketStatus, TicketView
from service.seat_map import shard_key
from service.seat_map import update as seat_map_update
from service.validation import (
    ANY_CONTENT_TYPE,
    accept_any_body,
    bad_request,
    check_id,
    check_read_body,
    holder_from,
    parse_json,
    user_id_from,
)

ticket = restate.VirtualObject("Ticket")

SOLD_MESSAGE = "Ticket already sold"
RESERVED_MESSAGE = "Ticket is currently reserved"


async def _load(ctx: ObjectContext | ObjectSharedContext) -> TicketState:
    check_id("ticketId", ctx.key())
    return await ctx.get(TICKET, type_hint=TicketState) or TicketState()


def _save(ctx: ObjectContext, state: TicketState, *, notify: bool = True) -> None:
    """Store the new state and (unless told not to) tell the seat's seat-map shard, off
    the caller's path. The version grows either way, so the map orders what it does see."""
    state.version += 1
    ctx.set(TICKET, state)
    if notify:
        notice = SeatUpdate(id=ctx.key(), status=state.status, version=state.version)
        ctx.object_send(seat_map_update, key=shard_key(ctx.key()), arg=notice)


async def _wall_clock_ms() -> int:
    return int(time.time() * 1000)


# An explicit serde spares the SDK from inspecting the action's signature on every call.
_NOW = RunOptions[int](serde=JsonSerde[int]())


async def _now_ms(ctx: ObjectContext) -> int:
    """Durable wall-clock time. An async action runs on the event loop; `ctx.time()`
    would hop through a thread pool for the same journal entry."""
    return await ctx.run_typed("now", _wall_clock_ms, _NOW)


def _hold_expired(state: TicketState, now_ms: int) -> bool:
    return (
        state.status is TicketStatus.RESERVED
        and state.reserved_until is not None
        and now_ms >= state.reserved_until
    )


def _release(ctx: ObjectContext, state: TicketState) -> TicketState:
    fresh = TicketState(version=state.version)
    _save(ctx, fresh)
    return fresh


@ticket.handler(input_serde=BytesSerde())
async def reserve(ctx: ObjectContext, body: bytes) -> TicketView:
    """Hold the seat for `userId` (body: `"user"` or `{"userId": "user"}`) until
    `hold_seconds` from now; a timer frees it then.

    A repeated reserve by the holder is idempotent; an expired hold counts as free."""
    user_id = _holder(body)
    state = await _load(ctx)
    if not await _may_take(ctx, state, user_id):
        return state.view()
    now = await _now_ms(ctx)
    hold_id = str(ctx.uuid())
    state = TicketState(
        status=TicketStatus.RESERVED,
        reservedBy=user_id,
        reservedUntil=now + int(settings.hold_seconds * 1000),
        holdId=hold_id,
        version=state.version,
    )
    _save(ctx, state)
    ctx.object_send(
        cleanup,
        key=ctx.key(),
        arg=json.dumps({"holdId": hold_id}).encode(),
        send_delay=timedelta(seconds=settings.hold_seconds),
    )
    return state.view()


@ticket.handler(input_serde=BytesSerde(), ingress_private=True)
async def hold(ctx: ObjectContext, body: bytes) -> TicketView:
    """`reserve` for Checkout (body: `{"userId", "holdId"}`): a hold that belongs to one
    checkout, named by its `holdId`, and lasts exactly as long as that checkout.

    The saga ends every hold it takes, by `confirm` or by `release` with the same holdId,
    and Restate runs it to its end, so this hold has no deadline (`reservedUntil` is null),
    no timer and no clock read, and the seat map hears of the seat once it is sold or
    released. A second checkout finds the seat reserved, even one by the same user: it
    would charge again for the same seat. The holder's own reservation (from `reserve`)
    is taken over by its checkout."""
    user_id, hold_id = holder_from(body, required=True)
    assert user_id is not None
    if hold_id is None:
        raise bad_request("Missing field 'holdId'")
    state = await _load(ctx)
    if state.status is TicketStatus.RESERVED and state.hold_id == hold_id:
        return state.view()
    if state.checkout_hold:
        raise TerminalError(RESERVED_MESSAGE, status_code=409)  # another checkout's hold
    await _may_take(ctx, state, user_id)
    state = TicketState(
        status=TicketStatus.RESERVED, reservedBy=user_id, holdId=hold_id, version=state.version
    )
    _save(ctx, state, notify=False)
    return state.view()


def _holder(body: bytes) -> str:
    user_id = user_id_from(body, required=True)
    assert user_id is not None
    return user_id


async def _may_take(ctx: ObjectContext, state: TicketState, user_id: str) -> bool:
    """True when the seat is free for a new hold; False when `user_id` holds it already
    (idempotent); 409 otherwise. The clock is read only for a hold with a deadline."""
    if state.status is TicketStatus.SOLD:
        raise TerminalError(SOLD_MESSAGE, status_code=409)
    if state.status is TicketStatus.RESERVED and not await _expired(ctx, state):
        if state.reserved_by == user_id:
            return False
        raise TerminalError(RESERVED_MESSAGE, status_code=409)
    return True


async def _expired(ctx: ObjectContext, state: TicketState) -> bool:
    """Whether a RESERVED seat's hold is over; a checkout's hold (no deadline) never is."""
    return state.reserved_until is not None and _hold_expired(state, await _now_ms(ctx))


@ticket.handler(input_serde=BytesSerde())
async def confirm(ctx: ObjectContext, body: bytes) -> TicketView:
    """Sell the reserved seat to its holder; refused once the hold has expired.

    Checkout names its hold (`{"userId", "holdId"}`); any other caller may not sell a
    seat that a checkout holds, since that checkout has not been paid yet."""
    user_id, hold_id = holder_from(body, required=False)
    state = await _load(ctx)
    ours = hold_id is not None and state.hold_id == hold_id
    if state.status is TicketStatus.SOLD:
        if ours or (hold_id is None and user_id in (None, state.reserved_by)):
            return state.view()
        raise TerminalError(SOLD_MESSAGE, status_code=409)
    if state.status is TicketStatus.AVAILABLE:
        raise TerminalError("Ticket is not reserved", status_code=409)
    if hold_id is not None and not ours:
        raise TerminalError(RESERVED_MESSAGE, status_code=409)
    if hold_id is None and (state.checkout_hold or user_id not in (None, state.reserved_by)):
        raise TerminalError(RESERVED_MESSAGE, status_code=409)
    if await _expired(ctx, state):
        _release(ctx, state)
        raise TerminalError("Reservation expired", status_code=409)
    state = TicketState(
        status=TicketStatus.SOLD,
        reservedBy=state.reserved_by,
        holdId=state.hold_id,
        version=state.version,
    )
    _save(ctx, state)
    return state.view()


@ticket.handler(input_serde=BytesSerde())
async def release(ctx: ObjectContext, body: bytes) -> TicketView:
    """Free a reserved seat. With a `userId`, only that holder's reservation is freed;
    with a `holdId` (Checkout's compensation), only that hold, and never a sold seat."""
    user_id, hold_id = holder_from(body, required=False)
    state = await _load(ctx)
    if hold_id is not None:
        if state.status is TicketStatus.RESERVED and state.hold_id == hold_id:
            return _release(ctx, state).view()
        return state.view()
    if state.status is TicketStatus.SOLD:
        raise TerminalError(SOLD_MESSAGE, status_code=409)
    if state.status is TicketStatus.AVAILABLE:
        return state.view()
    if user_id is not None and state.reserved_by != user_id:
        return state.view()
    return _release(ctx, state).view()


@ticket.handler(input_serde=BytesSerde())
async def cleanup(ctx: ObjectContext, body: bytes) -> TicketView:
    """Expire a hold (body: empty, `"holdId"` or `{"holdId": ...}`).

    `reserve` sends it with a delay and its holdId; it frees the seat only if that same
    hold is still in place and past its time, so a late timer never frees a seat that
    was sold or re-reserved since."""
    value = parse_json(body, allow_empty=True)
    if isinstance(value, dict):
        value = value.get("holdId")
    hold_id = None if value is None else check_id("holdId", value)
    state = await _load(ctx)
    if hold_id is not None and hold_id != state.hold_id:
        return state.view()
    if state.status is not TicketStatus.RESERVED or not await _expired(ctx, state):
        return state.view()
    return _release(ctx, state).view()


@ticket.handler(kind="shared", accept=ANY_CONTENT_TYPE, input_serde=BytesSerde())
async def get(ctx: ObjectSharedContext, body: bytes) -> TicketView:
    """Current status; accepts an empty body under any content type, or `{}`."""
    check_read_body(ctx, body)
    state = await _load(ctx)
    return state.view()


accept_any_body(ticket, "get")
