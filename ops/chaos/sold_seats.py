"""sold-seat-crash: the service dies right after a checkout sold its seat, before the answer
reaches the caller, while other buyers' refusals fill the new process's set of sold
seats with that very seat. The winner's retry must replay its own journal (its "known
sold" step said no) and end with "Booking Confirmed", charged and mailed once."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ops.base.processes import poll_until
from ops.chaos.base import (
    ChaosContext,
    checkout,
    ensure_running,
    expect_audit,
    gateway_faults,
    process_name,
    require_mock_gateway,
    require_process,
    restart,
    ticket_state,
)
from ops.chaos.crashes import mails_for
from ops.clients.invocations import JOURNAL_MISMATCH
from ops.release.stack import SERVICE
from ops.testing.checks import expect

REFUSALS = 4  # other buyers of the sold seat, after the restart
WAIT_S = 30.0  # bound of each wait of the scenario
WINNER_TIMEOUT_S = 60.0  # the winner's call: kill, restart, refusals and replays fit in it
_INVOCATION = (
    "SELECT id, status, retry_count, last_failure, last_failure_error_code"
    " FROM sys_invocation WHERE idempotency_key = '{key}'"
)


@contextmanager
def mail_blocked(outbox: Path) -> Iterator[None]:
    """The outbox's `new/` replaced by a plain file, so that every mail's final rename
    fails (NotADirectoryError) and its checkout is retried from right after the confirm;
    the directory is put back afterwards. Root ignores permissions, a file it cannot."""
    new_dir = outbox / "new"
    aside = outbox / f"new.aside-{os.getpid()}"
    if new_dir.is_dir():
        new_dir.rename(aside)
    new_dir.write_text("mail blocked by the sold-seat-crash chaos scenario\n")
    try:
        yield
    finally:
        new_dir.unlink(missing_ok=True)
        if aside.is_dir():
            aside.rename(new_dir)
        else:
            new_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(outbox / "tmp", ignore_errors=True)  # the failed attempts' staging


def _invocation(cx: ChaosContext, key: str) -> dict[str, Any]:
    admin = cx.admin()
    try:
        rows = admin.query(_INVOCATION.format(key=key.replace("'", "''")))
    finally:
        admin.close()
    return rows[0] if rows else {}


def _mismatch(row: dict[str, Any]) -> bool:
    failure = str(row.get("last_failure") or "")
    return str(row.get("last_failure_error_code") or "") == JOURNAL_MISMATCH or "[570" in failure


def _calls_to_ticket(cx: ChaosContext, key: str) -> int:
    """How many calls to a Ticket the checkout sent with Idempotency-Key `key` made."""
    invocation_id = str(_invocation(cx, key).get("id") or "")
    expect(bool(invocation_id), f"no invocation with Idempotency-Key {key}")
    admin = cx.admin()
    try:
        rows = admin.query(
            f"SELECT entry_type FROM sys_journal WHERE id = '{invocation_id}'"
            " AND entry_type = 'Command: Call'"
        )
    finally:
        admin.close()
    return len(rows)


def _kill(cx: ChaosContext, invocation_id: str) -> None:
    if invocation_id:
        admin = cx.admin()
        try:
            admin.kill(invocation_id)
        finally:
            admin.close()


def sold_seat_crash(cx: ChaosContext) -> str:
    """SIGKILL the service between a confirm and its answer while refusals fill the set of
    sold seats: the winner still gets "Booking Confirmed", once, with no journal mismatch."""
    require_process(cx, SERVICE)
    require_mock_gateway(cx)
    seat = cx.seat("sold-crash")
    winner = f"winner-{cx.run_id}"
    key = f"chaos-{cx.run_id}-sold-crash-winner"
    mismatches: list[str] = []
    with gateway_faults(cx), ThreadPoolExecutor(1) as pool:
        try:
            with mail_blocked(Path(cx.stack.outbox)):
                client = cx.client()
                answer = pool.submit(
                    checkout, client, seat, winner, idempotency_key=key, timeout=WINNER_TIMEOUT_S
                )
                watch = cx.client(timeout=10.0)
                try:
                    sold = poll_until(
                        lambda: ticket_state(watch, seat)["status"] == "SOLD", WAIT_S, 0.05
                    )
                    expect(sold, f"{seat} not SOLD within {WAIT_S:.0f} s")
                    expect(
                        not answer.done(),
                        "the winner answered before its seat was refused to others",
                    )
                    pid = cx.stack.procs.kill(process_name(cx, SERVICE))
                    expect(pid is not None, "the service was not running")
                    back = restart(cx, SERVICE)
                    refusals = [
                        checkout(watch, seat, f"other-{n}", idempotency_key=f"{key}-other-{n}")
                        for n in range(REFUSALS)
                    ]
                finally:
                    watch.close()
                for n, refused in enumerate(refusals):
                    expect(
                        refused.status == 409 and "Ticket already sold" in refused.text,
                        f"buyer other-{n} of the sold seat got {refused.brief()}",
                    )
                asked = [_calls_to_ticket(cx, f"{key}-other-{n}") for n in range(REFUSALS)]
                # The first refusal may already be answered from the set: the winner's own
                # attempts in the new process put its seat there when they replay the confirm.
                expect(
                    asked[-1] == 0,
                    f"calls to the Ticket per refusal {asked}: the set did not fill with {seat}",
                )
                at_fill = _invocation(cx, key)
                expect(
                    not answer.done() and at_fill.get("status") in ("backing-off", "running"),
                    f"the winner is not waiting to retry after the refusals: {at_fill}",
                )
            # The mail goes through now, so the winner's next attempt, the first to replay
            # with its seat in the new process's set, can finish.
            seen: dict[str, Any] = {}

            def settled() -> bool:
                row = _invocation(cx, key)
                if _mismatch(row):
                    mismatches.append(str(row.get("last_failure") or "")[:300])
                seen.update(row)
                return bool(mismatches) or row.get("status") == "completed"

            expect(poll_until(settled, WAIT_S, 0.05), f"the winner did not finish: {seen}")
            if mismatches:  # it never will: end it, so that nothing retries forever
                _kill(cx, str(seen.get("id") or ""))
            reply = answer.result(timeout=WINNER_TIMEOUT_S)
            client.close()
        finally:
            ensure_running(cx, SERVICE)
    expect(not mismatches, f"journal mismatch: {mismatches}")
    expect(
        reply.status == 200 and "Booking Confirmed" in reply.text,
        f"the winner got {reply.brief()}",
    )
    check = cx.client()
    try:
        state = ticket_state(check, seat)
    finally:
        check.close()
    expect(state["status"] == "SOLD" and state["reservedBy"] == winner, f"{seat} is {state}")
    with gateway_faults(cx) as gw:
        live = gw.live_charges(seat)
    expect(len(live) == 1 and live[0].get("userId") == winner, f"{seat}: live charges {live}")
    mails = mails_for(cx, [seat])[seat]
    expect(mails == 1, f"{mails} mails for {seat}")
    figures = expect_audit(cx, f"{cx.prefix}sold-crash")
    return (
        f"killed service pid {pid} after the confirm of {seat}; back in {back:.1f}s;"
        f" {REFUSALS} refusals (calls to the Ticket: {asked}); the winner, retried"
        f" {int(at_fill.get('retry_count') or 0)} times by then, replayed to 200 Booking Confirmed;"
        f" 1 charge, 1 mail, no journal mismatch; {figures}"
    )
