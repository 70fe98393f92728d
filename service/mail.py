"""Confirmation mail: an outbox directory, one file per booking, written exactly once.

Checkout calls `deliver` right after the seat is sold.

The outbox is Maildir-like: each message is written to `tmp/` and renamed into `new/`
under the booking id, so a retried or replayed checkout finds the message already there
and does not send a second one. That file is the record of delivery, which is why the
call needs no journal entry of its own. A real deployment would hand the same message,
with the booking id as idempotency key, to its mail provider instead."""

from __future__ import annotations

import binascii
import os
from collections.abc import Callable
from email.header import Header
from pathlib import Path

from service.models import MailRequest

# The fixed part of every message: plain UTF-8 text, quoted-printable so the outbox
# stays readable (base64 would not be).
_FIXED_HEADERS = (
    "MIME-Version: 1.0\n"
    'Content-Type: text/plain; charset="utf-8"\n'
    "Content-Transfer-Encoding: quoted-printable\n"
    "From: Nexus Tickets <tickets@nexus.invalid>\n"
)


def _slug(text: str) -> str:
    """Letters, digits, - and _ only: safe in file names and mail addresses."""
    return "".join(c if (c.isascii() and c.isalnum()) or c in "-_" else "_" for c in text)


def _file_name(booking_id: str) -> str:
    return _slug(booking_id) + ".eml"


def compose(req: MailRequest) -> bytes:
    """The confirmation message for one booking, as the bytes of an RFC 5322 file.

    Written from a template rather than through `email.message`: that package builds,
    folds and flattens a message in about 130 µs, a tenth of a checkout's own code.
    Ids cannot carry control characters (validation refuses them), the address and the
    Message-ID are slugged, and a non-ASCII subject is an RFC 2047 encoded word, so no
    value can add a header or a line."""
    booking = _slug(req.booking_id)
    subject = f"Booking confirmed: {req.ticket_id}"
    if not subject.isascii():
        subject = Header(subject, "utf-8").encode()
    head = (
        f"{_FIXED_HEADERS}"
        f"To: {_slug(req.user_id)}@users.nexus.invalid\n"
        f"Subject: {subject}\n"
        f"Message-ID: <{booking}@nexus.invalid>\n"
        f"X-Nexus-Booking: {booking}\n\n"
    )
    text = (
        f"Hello {req.user_id},\n\nyour seat {req.ticket_id} is booked"
        f" (booking {req.booking_id}, charge {req.charge_id}).\n"
    )
    return head.encode("ascii") + binascii.b2a_qp(text.encode("utf-8"), istext=True)


def deliver(outbox: Path, req: MailRequest) -> bool:
    """Write the message into `outbox/new`; False when it was already delivered."""
    name = _file_name(req.booking_id)
    staging_dir, new_dir = os.path.join(outbox, "tmp"), os.path.join(outbox, "new")
    final = os.path.join(new_dir, name)
    if os.path.exists(final):
        return False
    staging = os.path.join(staging_dir, f"{name}.{os.getpid()}")
    message = compose(req)
    _in_dir(staging_dir, lambda: _write(staging, message))
    _in_dir(new_dir, lambda: os.replace(staging, final))
    return True


def _in_dir(directory: str, action: Callable[[], None]) -> None:
    """Run `action`, which writes into `directory`; when the directory is missing (the
    outbox's first mail, or an outbox removed meanwhile), make it and run it once more."""
    try:
        action()
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)
        action()


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
