"""Confirmation mail (service/mail.py): one file per booking, written exactly once."""

from __future__ import annotations

import email
import email.policy
import shutil
from email.message import EmailMessage
from pathlib import Path

import pytest
from restate import TerminalError

from service.mail import compose, deliver
from service.models import MailRequest
from service.validation import check_id

REQ = MailRequest(
    booking_id="inv_1abcDEF234", ticket_id="concert:A-12", user_id="alice", charge_id="ch_99"
)


def files(outbox: Path) -> list[Path]:
    return sorted((outbox / "new").iterdir())


def read(path: Path) -> EmailMessage:
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def test_deliver_writes_one_file(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    assert deliver(outbox, REQ) is True
    written = files(outbox)
    assert [p.name for p in written] == ["inv_1abcDEF234.eml"]
    # staging directory exists but holds nothing left over
    assert list((outbox / "tmp").iterdir()) == []


def test_second_delivery_is_a_no_op(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    assert deliver(outbox, REQ) is True
    first = files(outbox)[0].read_bytes()
    assert deliver(outbox, REQ) is False
    assert deliver(outbox, REQ.model_copy(update={"charge_id": "other"})) is False
    assert len(files(outbox)) == 1
    assert files(outbox)[0].read_bytes() == first


def test_distinct_bookings_get_distinct_files(tmp_path: Path) -> None:
    for n in range(3):
        assert deliver(tmp_path, REQ.model_copy(update={"booking_id": f"inv_{n}"}))
    assert [p.name for p in files(tmp_path)] == ["inv_0.eml", "inv_1.eml", "inv_2.eml"]


def test_file_name_is_sanitized(tmp_path: Path) -> None:
    assert deliver(tmp_path, REQ.model_copy(update={"booking_id": "../evil/../id"}))
    [only] = files(tmp_path)
    assert only.parent == tmp_path / "new"
    assert "/" not in only.name
    assert not (tmp_path / "evil").exists()


def test_message_headers_and_body(tmp_path: Path) -> None:
    deliver(tmp_path, REQ)
    msg = read(files(tmp_path)[0])
    assert msg["Message-ID"] == "<inv_1abcDEF234@nexus.invalid>"
    assert msg["X-Nexus-Booking"] == "inv_1abcDEF234"
    assert msg["To"] == "alice@users.nexus.invalid"
    assert "concert:A-12" in msg["Subject"]
    assert msg["From"]
    text = msg.get_content()
    assert "concert:A-12" in text
    assert "inv_1abcDEF234" in text
    assert "ch_99" in text
    assert "alice" in text


def test_compose_matches_delivered_file(tmp_path: Path) -> None:
    deliver(tmp_path, REQ)
    assert files(tmp_path)[0].read_bytes() == compose(REQ)


def test_an_outbox_removed_while_running_is_made_again(tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    assert deliver(outbox, REQ)
    shutil.rmtree(outbox)
    assert deliver(outbox, REQ.model_copy(update={"booking_id": "inv_2"}))
    assert [p.name for p in files(outbox)] == ["inv_2.eml"]
    shutil.rmtree(outbox / "new")
    assert deliver(outbox, REQ.model_copy(update={"booking_id": "inv_3"}))
    assert [p.name for p in files(outbox)] == ["inv_3.eml"]


def test_long_body_lines_are_quoted_printable(tmp_path: Path) -> None:
    req = REQ.model_copy(update={"ticket_id": "e:" + "x" * 190, "user_id": "Zoë"})
    raw = compose(req)
    assert max(len(line) for line in raw.split(b"\n")[8:]) <= 76  # the body's lines
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert "e:" + "x" * 190 in msg.get_content()
    assert "Zoë" in msg.get_content()


def test_unicode_ids_are_delivered(tmp_path: Path) -> None:
    req = REQ.model_copy(update={"ticket_id": "Oper:Reihe-Ä", "user_id": "Zoë"})
    assert deliver(tmp_path, req)
    msg = read(files(tmp_path)[0])
    assert "Oper:Reihe-Ä" in msg["Subject"]
    assert "Zoë" in msg.get_content()


@pytest.mark.parametrize(
    "user_id", ["bob\nBcc: eve@evil.example", "eve@evil.example, bob", "x<eve@evil.example>"]
)
def test_any_accepted_user_id_mails_exactly_that_user(tmp_path: Path, user_id: str) -> None:
    try:
        check_id("userId", user_id)
    except TerminalError as exc:  # rejecting such ids up front is a fine fix too
        assert exc.status_code == 400
        return
    assert deliver(tmp_path, REQ.model_copy(update={"user_id": user_id}))
    msg = read(files(tmp_path)[0])
    addresses = msg["To"].addresses
    assert len(addresses) == 1
    assert addresses[0].domain == "users.nexus.invalid"
    assert msg["Bcc"] is None
