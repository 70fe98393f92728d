"""The audit's pure decision (`ops.operations.audit.check`): seat histories and charges in,
violations and notes out; no server needed."""

from __future__ import annotations

from ops.operations.audit import check
from service.models import TicketState, TicketStatus


def test_audit_flags_a_hold_past_its_time() -> None:
    stale = TicketState(status=TicketStatus.RESERVED, reservedBy="u", reservedUntil=1_000)
    report = check({"e:s": [stale]}, charges=[], now_ms=1_000 + 60_000)
    assert not report.ok and "past its hold" in report.violations[0]
    fine = check({"e:s": [stale]}, charges=[], now_ms=1_500)
    assert fine.ok


def test_audit_flags_a_checkout_hold_whose_own_checkout_is_not_running() -> None:
    held = TicketState(status=TicketStatus.RESERVED, reservedBy="u", holdId="inv_a")
    orphan = check({"e:s": [held]}, charges=[], checkouts_running=frozenset({"inv_b"}))
    assert not orphan.ok
    assert "checkout inv_a of u, which is no longer running" in orphan.violations[0]
    in_flight = check({"e:s": [held]}, charges=[], checkouts_running=frozenset({"inv_a"}))
    assert in_flight.ok and "1 checkout(s) still running" in in_flight.notes


def test_audit_allows_the_charge_of_a_checkout_that_has_not_confirmed_yet() -> None:
    held = TicketState(status=TicketStatus.RESERVED, reservedBy="u", holdId="inv_a")
    charge = {"id": "ch_1", "ticketId": "e:s", "userId": "u", "status": "succeeded"}
    running = check({"e:s": [held]}, charges=[charge], checkouts_running=frozenset({"inv_a"}))
    assert running.ok, running.violations
    ended = check({"e:s": [held]}, charges=[charge], checkouts_running=frozenset())
    assert "live charge ch_1 for u, but the seat is not sold" in " ".join(ended.violations)
