"""Confirmation mail: an outbox directory, one file per booking, written exactly once.

Checkout calls `deliver` as a durable step right after the seat is sold.

The outbox is Maildir-like: each message is written to `tmp/` and renamed into `new/`
under the booking id, so a retried or replayed step finds the message already there and
does not send a second one. A real deployment would hand the same message, with the
booking id as idempotency key, to its mail provider instead."""

from __future__ import annotations

import os
from email.message import EmailMessage
from pathlib import Path

from service.models import MailRequest


def _slug(text: str) -> str:
    """Letters, digits, - and _ only: safe in file names and mail addresses."""
    return "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "_" for c in text)


def _file_name(booking_id: str) -> str:
    return _slug(booking_id) + ".eml"


def compose(req: MailRequest) -> EmailMessage:
    """The confirmation message for one booking."""
    msg = EmailMessage()
    msg["From"] = "Nexus Tickets <tickets@nexus.invalid>"
    msg["To"] = f"{_slug(req.user_id)}@users.nexus.invalid"
    msg["Subject"] = f"Booking confirmed: {req.ticket_id}"
    msg["Message-ID"] = f"<{req.booking_id}@nexus.invalid>"
    msg["X-Nexus-Booking"] = req.booking_id
    msg.set_content(
        f"Hello {req.user_id},\n\nyour seat {req.ticket_id} is booked"
        f" (booking {req.booking_id}, charge {req.charge_id}).\n"
    )
    return msg


def deliver(outbox: Path, req: MailRequest) -> bool:
    """Write the message into `outbox/new`; False when it was already delivered."""
    final = outbox / "new" / _file_name(req.booking_id)
    if final.exists():
        return False
    staging = outbox / "tmp" / f"{final.name}.{os.getpid()}"
    staging.parent.mkdir(parents=True, exist_ok=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging.write_bytes(compose(req).as_bytes())
    os.replace(staging, final)
    return True


async def send_confirmation(outbox: Path, req: MailRequest) -> bool:
    """Checkout's durable mail step. Async so that Restate runs it on the event loop (a
    sync action would hop through a thread pool); the write itself is tiny."""
    return deliver(outbox, req)
