"""Checkout: the booking saga. Reserve the seat, charge, confirm, mail; on any failure
after the reservation, run the registered compensations in reverse order."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import restate
from restate import Context, RunOptions, TerminalError
from restate.serde import BytesSerde, JsonSerde, PydanticJsonSerde, Serde
from restate.server_context import restate_context_is_replaying

from service import payment
from service.config import settings
from service.mail import deliver
from service.models import DEFAULT_PAYMENT_METHOD, ChargeOutcome, CheckoutRequest, MailRequest
from service.sold_seats import sold_seats
from service.ticket import SOLD_MESSAGE, confirm, hold, release
from service.validation import check_id, optional_id, parse_json, require_object

checkout = restate.Service("Checkout")

CONFIRMED = "Booking Confirmed"

# Explicit serdes spare the SDK from inspecting each step's signature on every call.
_OUTCOME: Serde[ChargeOutcome] = PydanticJsonSerde(ChargeOutcome)  # type: ignore[no-untyped-call]
_TEXT = JsonSerde[str]()


def parse_checkout(body: bytes) -> CheckoutRequest:
    """Validate `{"ticketId", "userId", "paymentMethodId"?}`; 400 naming the field."""
    data = require_object(parse_json(body))
    return CheckoutRequest(
        ticket_id=check_id("ticketId", data.get("ticketId")),
        user_id=check_id("userId", data.get("userId")),
        payment_method_id=optional_id("paymentMethodId", data, DEFAULT_PAYMENT_METHOD),
    )


@checkout.handler(input_serde=BytesSerde())
async def process(ctx: Context, body: bytes) -> str:
    """Book one seat for one user; answers "Booking Confirmed" or a terminal error."""
    fresh = _fresh_attempt()  # first, before any call to the context
    req = parse_checkout(body)
    booking_id = ctx.request().id
    # The hold is this checkout's own: confirm and release name it, so no other
    # checkout (not even the same user's) can sell or free it.
    holder = json.dumps({"userId": req.user_id, "holdId": booking_id}).encode()
    pay_key = f"checkout-{ctx.uuid()}"
    charged = ChargeOutcome(status="pending")
    compensations: list[Callable[[], Awaitable[object]]] = []
    if fresh and sold_seats.known_sold(req.ticket_id):
        raise TerminalError(SOLD_MESSAGE, status_code=409)  # the Ticket's own answer
    try:
        await _take_seat(ctx, req.ticket_id, holder)
        compensations.append(lambda: ctx.object_call(release, key=req.ticket_id, arg=holder))

        compensations.append(lambda: _refund(ctx, pay_key, charged))
        charged = await _charge(ctx, req, pay_key)
        if charged.status == "cancelled":
            raise TerminalError("Checkout cancelled during payment", 409)
        if charged.status == "declined":
            raise TerminalError(f"Payment failed: Payment declined ({charged.detail})", 402)
        if charged.status != "succeeded":
            raise TerminalError(f"Payment failed: Gateway timeout ({charged.detail})", 502)

        await _sell_seat(ctx, req.ticket_id, holder)
        sold_seats.add(req.ticket_id)
    except TerminalError:
        await _compensate(compensations)
        raise

    mail = MailRequest(
        booking_id=booking_id,
        ticket_id=req.ticket_id,
        user_id=req.user_id,
        charge_id=charged.charge_id,
    )
    # Not a journaled step: the outbox file named by the booking id is its own record of
    # delivery, so a replay finds it and sends nothing twice. A failed write raises, and
    # Restate retries the invocation.
    deliver(settings.mail_outbox, mail)
    return CONFIRMED


def _cancelled(exc: TerminalError) -> bool:
    """The SDK's form of a cancel signal, raised at whatever the handler awaits."""
    return exc.status_code == 409 and exc.message == "cancelled"


def _fresh_attempt() -> bool:
    """Whether this attempt's journal holds nothing but its input.

    Only such an attempt may refuse from the live set of sold seats: no hold call of this
    checkout was ever stored (Restate retries only once every command an attempt sent is
    stored), so it cannot have sold the seat itself, and an answer read now contradicts
    no recorded step. An attempt with anything recorded took the "not known sold" path
    before (a refusal records only its output, and a finished invocation is not retried),
    so it takes it again. The flag is the SDK's own, set from `StartMessage.known_entries`
    before the handler runs; see docs/sold-out-seats.md."""
    return not restate_context_is_replaying.get()


async def _take_seat(ctx: Context, ticket_id: str, holder: bytes) -> None:
    """Ticket.hold. A cancel can overtake the answer of a hold that went through, so a
    cancelled hold is released (by its holdId, which frees this hold and nothing else).
    A seat the Ticket says is sold is remembered as sold (SOLD is final)."""
    try:
        await ctx.object_call(hold, key=ticket_id, arg=holder)
    except TerminalError as exc:
        if _cancelled(exc):
            await ctx.object_call(release, key=ticket_id, arg=holder)
        elif exc.status_code == 409 and exc.message == SOLD_MESSAGE:
            sold_seats.add(ticket_id)
        raise


async def _sell_seat(ctx: Context, ticket_id: str, holder: bytes) -> None:
    """Ticket.confirm. The seat is paid for by now, so a cancel does not undo the booking:
    a cancel can overtake a confirm that went through, and confirm is idempotent for its
    hold, so it is sent again and only the seat's answer decides."""
    try:
        await ctx.object_call(confirm, key=ticket_id, arg=holder)
    except TerminalError as exc:
        if not _cancelled(exc):
            raise
        await ctx.object_call(confirm, key=ticket_id, arg=holder)


async def _compensate(compensations: list[Callable[[], Awaitable[object]]]) -> None:
    """Undo in reverse order. Every compensation runs even when an earlier one fails
    (a refund that never went through must not keep the seat held); the first failure
    is raised at the end."""
    failure: TerminalError | None = None
    for undo in reversed(compensations):
        try:
            await undo()
        except TerminalError as exc:
            failure = failure or exc
    if failure is not None:
        raise failure


async def _charge(ctx: Context, req: CheckoutRequest, pay_key: str) -> ChargeOutcome:
    """The durable payment step; its own retries are inside `payment.charge`."""
    try:
        return await ctx.run_typed(
            "charge",
            payment.charge,
            RunOptions(max_attempts=3, serde=_OUTCOME),
            settings,
            idempotency_key=pay_key,
            ticket_id=req.ticket_id,
            user_id=req.user_id,
            payment_method_id=req.payment_method_id,
        )
    except TerminalError as exc:
        # Cancelled or out of attempts, the charge may have reached the gateway: both
        # outcomes are refunded.
        status = "cancelled" if _cancelled(exc) else "gateway_error"
        return ChargeOutcome(status=status, detail=exc.message)


async def _refund(ctx: Context, pay_key: str, charged: ChargeOutcome) -> None:
    """Compensation of the charge: refund whenever money may have moved.

    After a gateway error or a cancellation the refund is best effort: the gateway may
    still be down, and a refund of a key it never charged voids that key."""
    if charged.status not in ("succeeded", "gateway_error", "cancelled"):
        return
    try:
        await ctx.run_typed(
            "refund",
            payment.refund,
            RunOptions(
                max_attempts=10 if charged.status == "succeeded" else 2,
                serde=_TEXT,
            ),
            settings,
            idempotency_key=pay_key,
        )
    except TerminalError:
        if charged.status == "succeeded":
            raise
