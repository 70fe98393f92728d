"""Booking invariants, read from Restate's own state (admin `POST /query`) and the
payment gateway's charge list.

- no seat held by two buyers, and no SOLD seat without a holder (a Ticket object keeps
  one state, so a seat sold twice shows in the charges below, not here);
- every SOLD seat has exactly one live (unrefunded) charge, by its holder;
- no seat RESERVED past its hold (beyond a grace for timer delivery), and no checkout
  hold (a hold without deadline) whose own checkout, named by its holdId, has ended;
- no live charge left for a seat that is not SOLD to the payer, unless the seat's
  checkout is still running (charged, not confirmed yet);
- no stuck invocation (`ops.clients.invocations`): paused, failing on a journal mismatch or
  another non-transient failure, or retried beyond a bound. A checkout that will never
  finish holds its seat and maybe a charge, so "still running" is no excuse for it.
Where the gateway cannot list charges, only the state invariants are checked."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from ops.base.environments import Environment
from ops.clients.admin import AdminClient, GatewayClient
from ops.clients.invocations import (
    DEFAULT_MAX_RETRIES,
    Invocation,
    checkouts_in_flight,
    open_invocations,
)
from service.models import TICKET, TicketState, TicketStatus

HOLD_GRACE_MS = 5_000


@dataclass
class AuditReport:
    """What was checked, and every violation found."""

    checked: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **self.checked, "violations": self.violations, "notes": self.notes}

    def lines(self) -> list[str]:
        head = "audit ok" if self.ok else f"audit FAILED: {len(self.violations)} violation(s)"
        figures = ", ".join(f"{k}={v}" for k, v in self.checked.items())
        return [
            f"{head} ({figures})",
            *(f"  note: {n}" for n in self.notes),
            *(f"  violation: {v}" for v in self.violations),
        ]


def read_tickets(admin: AdminClient, prefix: str = "") -> dict[str, list[TicketState]]:
    """Every Ticket object's state, by seat id (a list, so duplicates would show)."""
    where = f"service_name = 'Ticket' AND key = '{TICKET}'"
    if prefix:
        escaped = prefix.replace("'", "''")
        where += f" AND starts_with(service_key, '{escaped}')"
    rows = admin.query(f"SELECT service_key, value_utf8 FROM state WHERE {where}")
    seats: dict[str, list[TicketState]] = defaultdict(list)
    for row in rows:
        seats[str(row["service_key"])].append(
            TicketState.model_validate(json.loads(row["value_utf8"]))
        )
    return seats


def read_charges(gateway_url: str) -> list[dict[str, Any]]:
    """The mock gateway's charge list."""
    gateway = GatewayClient(gateway_url)
    try:
        return gateway.charges()
    finally:
        gateway.close()


def check(
    seats: dict[str, list[TicketState]],
    charges: list[dict[str, Any]] | None,
    *,
    prefix: str = "",
    now_ms: int | None = None,
    checkouts_running: frozenset[str] = frozenset(),
    stuck: list[tuple[Invocation, str]] | None = None,
) -> AuditReport:
    """The invariants over already-read state: pure, so it is unit-testable. `stuck`
    lists the stuck invocations with their reason (None: not read)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    report = AuditReport()
    _check_stuck(report, stuck, prefix)
    status = Counter(states[-1].status.value for states in seats.values())
    report.checked = {
        **report.checked,
        "seats": len(seats),
        "sold": status["SOLD"],
        "reserved": status["RESERVED"],
        "available": status["AVAILABLE"],
    }
    for seat, states in sorted(seats.items()):
        if len(states) > 1:
            report.violations.append(f"{seat}: {len(states)} states for one seat")
        state = states[-1]
        if state.status is TicketStatus.SOLD and not state.reserved_by:
            report.violations.append(f"{seat}: SOLD without a holder")
        if (
            state.status is TicketStatus.RESERVED
            and state.reserved_until is not None
            and now > state.reserved_until + HOLD_GRACE_MS
        ):
            late = (now - state.reserved_until) / 1000
            report.violations.append(
                f"{seat}: RESERVED by {state.reserved_by} {late:.0f}s past its hold"
            )
        if state.checkout_hold and state.hold_id not in checkouts_running:
            report.violations.append(
                f"{seat}: held for checkout {state.hold_id} of {state.reserved_by},"
                " which is no longer running"
            )
    if checkouts_running:
        report.notes.append(f"{len(checkouts_running)} checkout(s) still running")
    if charges is None:
        report.notes.append("the gateway cannot list charges: checked the state invariants only")
        return report
    live: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for charge in charges:
        ticket = str(charge.get("ticketId") or "")
        if (
            ticket.startswith(prefix)
            and charge.get("status") == "succeeded"
            and not charge.get("refunded")
        ):
            live[ticket].append(charge)
    report.checked["live_charges"] = sum(len(c) for c in live.values())
    for seat, states in sorted(seats.items()):
        state = states[-1]
        if state.status is not TicketStatus.SOLD:
            continue
        paid = live.get(seat, [])
        if len(paid) != 1:
            report.violations.append(
                f"{seat}: SOLD to {state.reserved_by} with {len(paid)} live charges"
            )
        elif paid[0].get("userId") != state.reserved_by:
            report.violations.append(
                f"{seat}: SOLD to {state.reserved_by} but charged to {paid[0].get('userId')}"
            )
    for ticket, paid in sorted(live.items()):
        found = seats.get(ticket)
        if found and found[-1].checkout_hold and found[-1].hold_id in checkouts_running:
            continue  # charged, not confirmed yet: its checkout is still running
        holder = found[-1].reserved_by if found and found[-1].status is TicketStatus.SOLD else None
        for charge in paid:
            if charge.get("userId") != holder:
                report.violations.append(
                    f"{ticket}: live charge {charge.get('id')} for {charge.get('userId')},"
                    f" but the seat is {'SOLD to ' + str(holder) if holder else 'not sold'}"
                )
    return report


def _check_stuck(
    report: AuditReport, stuck: list[tuple[Invocation, str]] | None, prefix: str
) -> None:
    """A violation per stuck invocation (within `prefix`, when the audit has one: by its
    seat, else its key); stuck work outside the prefix is still named in a note."""
    if stuck is None:
        return
    inside = [(inv, why) for inv, why in stuck if (inv.seat or inv.key or "").startswith(prefix)]
    report.checked["stuck"] = len(inside)
    for inv, why in inside:
        seat = f"seat {inv.seat}{' held' if inv.holds_seat else ''}" if inv.seat else "no seat"
        report.violations.append(
            f"stuck invocation {inv.id} {inv.target} ({why}, {inv.status},"
            f" retry count {inv.retry_count}, {seat}): last failure {inv.last_failure or 'none'}"
        )
    if len(stuck) > len(inside):
        report.notes.append(
            f"{len(stuck) - len(inside)} stuck invocation(s) outside prefix {prefix!r}:"
            " see invoke invocations"
        )


def stuck_invocations(
    admin: AdminClient, max_retries: int = DEFAULT_MAX_RETRIES
) -> list[tuple[Invocation, str]]:
    """Every open invocation that waiting will not end, with the reason."""
    found = []
    for inv in open_invocations(admin):
        why = inv.stuck_reason(max_retries)
        if why is not None:
            found.append((inv, why))
    return found


def audit(
    env: Environment, *, prefix: str = "", max_retries: int = DEFAULT_MAX_RETRIES
) -> AuditReport:
    """Read state, invocations and charges of `env` and check every invariant."""
    admin = AdminClient(env.admin.url, env.token)
    try:
        stuck = stuck_invocations(admin, max_retries)
        seats = read_tickets(admin, prefix)
        running = checkouts_in_flight(admin)
        if any(s[-1].checkout_hold and s[-1].hold_id not in running for s in seats.values()):
            # Its checkout may have ended between the two reads, and the hold with it.
            # Read the seats again: a hold seen both times whose checkout was not running
            # in between is an orphan; a hold new since the first read is taken as live.
            again = read_tickets(admin, prefix)
            seen = {states[-1].hold_id for states in seats.values()}
            running |= {
                states[-1].hold_id
                for states in again.values()
                if states[-1].checkout_hold
                and states[-1].hold_id
                and states[-1].hold_id not in seen
            }
            seats = again
    finally:
        admin.close()
    charges = read_charges(env.gateway.url) if env.gateway_mode == "mock" else None
    return check(seats, charges, prefix=prefix, checkouts_running=running, stuck=stuck)
