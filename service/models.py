"""Typed models for requests, state and answers, plus the state-key constants."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

# State keys
TICKET = "ticket"  # Ticket object: the whole TicketState as one JSON value
SEAT_PREFIX = "seat:"  # SeatMapShard object: one key per seat, "seat:<ticketId>"

GLOBAL_EVENT = "global"
MAX_ID_LENGTH = 200
DEFAULT_PAYMENT_METHOD = "card_success"


class TicketStatus(StrEnum):
    """Lifecycle of a seat."""

    AVAILABLE = "AVAILABLE"
    RESERVED = "RESERVED"
    SOLD = "SOLD"


class TicketState(BaseModel):
    """What a Ticket object stores. `holdId` names the current reservation."""

    model_config = ConfigDict(populate_by_name=True)

    status: TicketStatus = TicketStatus.AVAILABLE
    reserved_by: str | None = Field(default=None, alias="reservedBy")
    reserved_until: int | None = Field(default=None, alias="reservedUntil")
    hold_id: str | None = Field(default=None, alias="holdId")
    version: int = 0

    @property
    def checkout_hold(self) -> bool:
        """RESERVED by a Checkout saga: its hold has no deadline and ends with the saga."""
        return self.status is TicketStatus.RESERVED and self.reserved_until is None

    def view(self) -> TicketView:
        """The public answer of `Ticket/get`."""
        return TicketView(
            status=self.status, reservedBy=self.reserved_by, reservedUntil=self.reserved_until
        )


class TicketView(BaseModel):
    """Wire form of a ticket: `{"status", "reservedBy", "reservedUntil"}`."""

    status: TicketStatus
    reservedBy: str | None  # wire name
    reservedUntil: int | None  # wire name


class SeatUpdate(BaseModel):
    """A Ticket's one-way notice to its event's seat map."""

    id: str
    status: TicketStatus
    version: int


class SeatEntry(BaseModel):
    """One row of `SeatMap/get`."""

    id: str
    status: TicketStatus


class CheckoutRequest(BaseModel):
    """Validated body of `Checkout/process`."""

    ticket_id: str
    user_id: str
    payment_method_id: str = DEFAULT_PAYMENT_METHOD


class ChargeOutcome(BaseModel):
    """Journaled result of the payment step."""

    status: str  # "succeeded" | "declined" | "gateway_error" | "cancelled"
    charge_id: str | None = None
    detail: str = ""
    attempts: int = 0


class MailRequest(BaseModel):
    """What the mailer needs to confirm one booking."""

    booking_id: str
    ticket_id: str
    user_id: str
    charge_id: str | None = None


def event_of(ticket_id: str) -> str:
    """The event a ticket belongs to: `event:seat` → `event`; no colon → `global`."""
    event, sep, _ = ticket_id.partition(":")
    return event if sep and event else GLOBAL_EVENT
