"""Invocations as Restate reports them (admin `POST /query` on `sys_invocation`, `state`
and `sys_journal`): what is running, what is stuck and why, and the seat each one is
about. Read once here, used by `invoke invocations`, `invoke cancel --stuck`, the audit
and `status`.

An invocation is *stuck* when waiting will not end it: it is paused, its last failure is
a journal mismatch (RT0016, code 570) or another protocol failure (codes 570-579: the
replay against the same code fails the same way), or it has been retried more than a
bound. Running, suspended and freshly retried work is not stuck."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ops.base.errors import ApiError, ConfigError, NexusError, NotConverged
from ops.base.steps import Result, StepContext, StepFn
from ops.clients.admin import AdminClient
from service.models import TICKET, TicketState

# Statuses of an invocation that has not completed (sys_invocation.status).
OPEN_STATUSES = (
    "pending",
    "scheduled",
    "ready",
    "running",
    "suspended",
    "backing-off",
    "paused",
)
# More retries than this and an invocation counts as stuck. A checkout's payment retries
# run inside its one journaled step and never count here; a service restart costs a few.
DEFAULT_MAX_RETRIES = 10
JOURNAL_MISMATCH = "RT0016"
_PROTOCOL_FAILURE = re.compile(r"^\[57\d\b")
# Services whose key is a seat id.
_SEAT_KEYED = ("Ticket",)
_CHECKOUT = "Checkout"
# SQL `IN (...)` lists are sent in chunks of this many ids.
_CHUNK = 100

_COLUMNS = (
    "id, target, target_service_name, target_service_key, target_handler_name, status,"
    " created_at, modified_at, retry_count, last_failure, last_failure_error_code,"
    " pinned_deployment_id, last_attempt_deployment_id, next_retry_at"
)


@dataclass(frozen=True)
class Invocation:
    """One invocation; `seat` is the seat it is about (a Ticket's key, or for a Checkout
    the seat it holds or asked for), `holds_seat` whether that seat is held for it."""

    id: str
    target: str
    service: str
    handler: str
    key: str | None
    status: str
    created_ms: int
    modified_ms: int
    retry_count: int = 0
    last_failure: str | None = None
    failure_code: str | None = None
    pinned_deployment: str | None = None
    next_retry_ms: int | None = None
    seat: str | None = None
    holds_seat: bool = False

    def age_s(self, now_ms: int) -> float:
        return max(0.0, (now_ms - self.created_ms) / 1000)

    def stuck_reason(self, max_retries: int = DEFAULT_MAX_RETRIES) -> str | None:
        """Why waiting will not end this invocation, or None when it is not stuck."""
        if self.status == "completed":
            return None
        if self.status == "paused":
            return "paused"
        failure = self.last_failure or ""
        if self.failure_code == JOURNAL_MISMATCH or failure.startswith("[570"):
            return "journal mismatch"
        if _PROTOCOL_FAILURE.match(failure):
            return f"non-transient failure {failure.split(']')[0].lstrip('[')}"
        if self.retry_count > max_retries:
            return f"retried {self.retry_count} times"
        return None

    def to_dict(self, now_ms: int, max_retries: int = DEFAULT_MAX_RETRIES) -> dict[str, Any]:
        return {
            "id": self.id,
            "target": self.target,
            "status": self.status,
            "seat": self.seat,
            "holds_seat": self.holds_seat,
            "age_s": round(self.age_s(now_ms), 1),
            "retry_count": self.retry_count,
            "last_failure": self.last_failure,
            "failure_code": self.failure_code,
            "pinned_deployment": self.pinned_deployment,
            "stuck": self.stuck_reason(max_retries),
        }


def _ms(value: Any) -> int | None:
    """Epoch milliseconds of a timestamp as the SQL API writes it (`...T17:13:54.687Z`)."""
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        return int(value)
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp() * 1000)


def _first_line(text: Any) -> str | None:
    """A failure's first line (the rest is a traceback), at most 300 characters."""
    if not text:
        return None
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line[:300] or None


def from_row(row: dict[str, Any]) -> Invocation:
    """One `sys_invocation` row (the columns of `_COLUMNS`) as an `Invocation`."""
    service = str(row.get("target_service_name") or "")
    key = row.get("target_service_key")
    return Invocation(
        id=str(row["id"]),
        target=str(row.get("target") or ""),
        service=service,
        handler=str(row.get("target_handler_name") or ""),
        key=None if key is None else str(key),
        status=str(row.get("status") or ""),
        created_ms=_ms(row.get("created_at")) or 0,
        modified_ms=_ms(row.get("modified_at")) or 0,
        retry_count=int(row.get("retry_count") or 0),
        last_failure=_first_line(row.get("last_failure")),
        failure_code=row.get("last_failure_error_code") or None,
        # Pinned once the first attempt reached a deployment; until then, the one tried.
        pinned_deployment=row.get("pinned_deployment_id")
        or row.get("last_attempt_deployment_id")
        or None,
        next_retry_ms=_ms(row.get("next_retry_at")),
        seat=str(key) if service in _SEAT_KEYED and key is not None else None,
    )


def _quoted(values: Iterable[str]) -> str:
    return ", ".join("'" + v.replace("'", "''") + "'" for v in values)


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


def ticket_id_of_input(entry_json: str) -> str | None:
    """The `ticketId` a Checkout was asked for, from its journal's Input entry (the
    payload is a list of bytes there). Only the payload is read: never the headers."""
    try:
        entry = json.loads(entry_json)
        payload = entry["Command"]["Input"]["payload"]
        body = json.loads(bytes(payload).decode())
    except (ValueError, KeyError, TypeError):
        return None
    ticket = body.get("ticketId") if isinstance(body, dict) else None
    return ticket if isinstance(ticket, str) else None


def _seats_asked(admin: AdminClient, ids: Sequence[str]) -> dict[str, str]:
    """Invocation id → the seat its input names (journal entry 0)."""
    asked: dict[str, str] = {}
    for chunk in _chunks(ids):
        try:
            rows = admin.query(
                "SELECT id, entry_json FROM sys_journal"
                f" WHERE index = 0 AND id IN ({_quoted(chunk)})"
            )
        except ApiError:
            return asked  # a server that does not expose journals: holds still name seats
        for row in rows:
            seat = ticket_id_of_input(str(row.get("entry_json") or ""))
            if seat is not None:
                asked[str(row["id"])] = seat
    return asked


def _seats_held(admin: AdminClient, ids: Sequence[str]) -> dict[str, str]:
    """Checkout invocation id → the seat held for it (a Ticket whose holdId is its id)."""
    held: dict[str, str] = {}
    for chunk in _chunks(ids):
        likes = " OR ".join(f"value_utf8 LIKE {_quoted(['%' + i + '%'])}" for i in chunk)
        rows = admin.query(
            "SELECT service_key, value_utf8 FROM state"
            f" WHERE service_name = 'Ticket' AND key = '{TICKET}' AND ({likes})"
        )
        for row in rows:
            state = TicketState.model_validate(json.loads(row["value_utf8"]))
            if state.hold_id is not None and state.hold_id in chunk:
                held[state.hold_id] = str(row["service_key"])
    return held


def with_seats(
    invocations: list[Invocation], held: dict[str, str], asked: dict[str, str]
) -> list[Invocation]:
    """Checkouts get the seat held for them, else the seat they asked for."""
    out: list[Invocation] = []
    for inv in invocations:
        if inv.service == _CHECKOUT:
            seat = held.get(inv.id) or asked.get(inv.id)
            inv = replace(inv, seat=seat, holds_seat=inv.id in held)
        out.append(inv)
    return out


def open_invocations(
    admin: AdminClient, *, service: str | None = None, status: str | None = None
) -> list[Invocation]:
    """Every invocation not completed yet (optionally of one service or status), with
    the seat each is about."""
    where = ["status != 'completed'"]
    if service:
        where.append(f"target_service_name = {_quoted([service])}")
    if status:
        where.append(f"status = {_quoted([status])}")
    rows = admin.query(f"SELECT {_COLUMNS} FROM sys_invocation WHERE {' AND '.join(where)}")
    found = [from_row(r) for r in rows]
    checkouts = [i.id for i in found if i.service == _CHECKOUT]
    if not checkouts:
        return found
    return with_seats(found, _seats_held(admin, checkouts), _seats_asked(admin, checkouts))


def by_idempotency_key(
    admin: AdminClient, *, prefix: str | None = None, keys: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """Invocations sent with an Idempotency-Key (completed ones too, while Restate keeps
    them): those whose key starts with `prefix`, or whose key is one of `keys`. Each row:
    id, idempotency_key, status, created_at, pinned_deployment_id."""
    columns = "id, idempotency_key, status, created_at, pinned_deployment_id"
    if prefix is not None:
        escaped = prefix.replace("'", "''")
        return admin.query(
            f"SELECT {columns} FROM sys_invocation WHERE starts_with(idempotency_key, '{escaped}')"
        )
    rows: list[dict[str, Any]] = []
    for chunk in _chunks(list(keys)):
        rows += admin.query(
            f"SELECT {columns} FROM sys_invocation WHERE idempotency_key IN ({_quoted(chunk)})"
        )
    return rows


def checkouts_in_flight(admin: AdminClient) -> frozenset[str]:
    """Ids of the Checkout invocations not completed yet (running, suspended, backing
    off...). A checkout's hold names its invocation id as its holdId."""
    rows = admin.query(
        "SELECT id FROM sys_invocation"
        " WHERE status != 'completed' AND target_service_name = 'Checkout'"
    )
    return frozenset(str(row["id"]) for row in rows)


def invocations_open(admin: AdminClient, service: str | None = None) -> int:
    """Invocations not completed yet (queued, running, suspended...), of one service or all."""
    where = "status != 'completed'"
    if service is not None:
        where += " AND target_service_name = '" + service.replace("'", "''") + "'"
    rows = admin.query(f"SELECT count(*) AS n FROM sys_invocation WHERE {where}")
    return int(rows[0]["n"]) if rows else 0


def unfinished_by_deployment(admin: AdminClient) -> dict[str, tuple[int, str]]:
    """Per deployment id: how many invocations pinned to it are not completed
    (running, suspended, backing off, paused...), and when the oldest was created."""
    rows = admin.query(
        "SELECT pinned_deployment_id AS deployment, count(*) AS n,"
        " min(created_at) AS oldest FROM sys_invocation"
        " WHERE status != 'completed' AND pinned_deployment_id IS NOT NULL"
        " GROUP BY pinned_deployment_id"
    )
    return {str(r["deployment"]): (int(r["n"]), str(r["oldest"])) for r in rows}


def pinned_deployment(admin: AdminClient, invocation_id: str) -> str | None:
    """The deployment an invocation ran on (kept while Restate retains it)."""
    escaped = invocation_id.replace("'", "''")
    rows = admin.query(f"SELECT pinned_deployment_id FROM sys_invocation WHERE id = '{escaped}'")
    value = rows[0].get("pinned_deployment_id") if rows else None
    return str(value) if value else None


def completed_invocations(admin: AdminClient, *, older_than_s: float = 0.0) -> list[str]:
    """Ids of completed invocations whose completion is older than `older_than_s`."""
    rows = admin.query("SELECT id, completed_at FROM sys_invocation WHERE status = 'completed'")
    cutoff = now_ms() - older_than_s * 1000
    return [str(r["id"]) for r in rows if (_ms(r.get("completed_at")) or 0) <= cutoff]


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class Selection:
    """Which invocations a listing shows, in which order."""

    status: str | None = None
    service: str | None = None
    older_than_s: float = 0.0
    max_retries: int = DEFAULT_MAX_RETRIES
    now: int = field(default_factory=now_ms)

    def apply(self, invocations: Iterable[Invocation]) -> list[Invocation]:
        """Filter, then stuck work first (longest-stuck first), then oldest first."""
        chosen = [
            i
            for i in invocations
            if (self.status is None or i.status == self.status)
            and (self.service is None or i.service == self.service)
            and i.age_s(self.now) >= self.older_than_s
        ]
        return sorted(
            chosen,
            key=lambda i: (i.stuck_reason(self.max_retries) is None, i.created_ms, i.id),
        )


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(option: str, text: str) -> float:
    """`90`, `90s`, `15m`, `2h`, `1d`, `500ms` → seconds; a ConfigError naming the
    option otherwise."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"{option} takes a duration like 30s, 15m, 2h or 1d, not {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def table_lines(
    invocations: Sequence[Invocation], now: int, max_retries: int = DEFAULT_MAX_RETRIES
) -> list[str]:
    """A text table, one line per invocation (its last failure on the next line)."""
    if not invocations:
        return ["no open invocations"]
    lines = [
        f"{'ID':<38} {'TARGET':<28} {'STATUS':<12} {'SEAT':<22} {'AGE':>6} {'RETRY':>5}"
        f"  {'DEPLOYMENT':<28} STUCK"
    ]
    for inv in invocations:
        seat = inv.seat or "-"
        if inv.service == _CHECKOUT and inv.seat:
            seat += " (held)" if inv.holds_seat else " (asked)"
        target = f"{inv.service}/{inv.handler}" if inv.key is None else inv.target
        lines.append(
            f"{inv.id:<38} {target[:28]:<28} {inv.status:<12} {seat[:22]:<22}"
            f" {_age(inv.age_s(now)):>6} {inv.retry_count:>5}"
            f"  {inv.pinned_deployment or '-':<28} {inv.stuck_reason(max_retries) or ''}"
        )
        if inv.last_failure:
            lines.append(f"{'':<4}last failure: {inv.last_failure}")
    stuck = sum(i.stuck_reason(max_retries) is not None for i in invocations)
    lines.append(f"{len(invocations)} open, {stuck} stuck")
    return lines


# --- ending invocations ------------------------------------------------------------------

_ID = re.compile(r"^inv_[0-9A-Za-z]{20,}$")
KILL_REFUSED = (
    "refusing to kill Checkout invocation(s) {ids}: kill skips a checkout's compensations,"
    " so its seat stays held (RESERVED with no deadline) and a charge made may stay live."
    " Cancel instead (drop --kill: the saga releases the seat and refunds), or add --force"
    " to kill anyway and then release the seat and refund by hand. Nothing was changed."
)


CANCEL_UNSEEN = (
    ". Restate hands the cancellation to the invocation's next attempt (it may be backing"
    " off for a while), and an attempt that fails before its first await (a journal"
    " mismatch, a crash on start) never sees it. Wait and look again with invoke"
    " invocations, or end it with --kill (a Checkout also needs --force, and then its seat"
    " released and its charge refunded by hand)"
)


def by_ids(admin: AdminClient, ids: Sequence[str]) -> list[Invocation]:
    """The named invocations (completed ones too); an error naming any id that is
    malformed or unknown, before anything is done."""
    bad = [i for i in ids if not _ID.match(i)]
    if bad:
        raise ConfigError(f"not an invocation id (inv_...): {', '.join(bad)}")
    found: dict[str, Invocation] = {}
    for chunk in _chunks(list(dict.fromkeys(ids))):
        rows = admin.query(f"SELECT {_COLUMNS} FROM sys_invocation WHERE id IN ({_quoted(chunk)})")
        found.update((str(r["id"]), from_row(r)) for r in rows)
    missing = [i for i in ids if i not in found]
    if missing:
        raise ConfigError(f"no such invocation on this server: {', '.join(missing)}")
    invocations = [found[i] for i in dict.fromkeys(ids)]
    checkouts = [i.id for i in invocations if i.service == _CHECKOUT]
    if checkouts:
        invocations = with_seats(
            invocations, _seats_held(admin, checkouts), _seats_asked(admin, checkouts)
        )
    return invocations


def to_end(
    admin: AdminClient,
    ids: Sequence[str],
    *,
    stuck: bool,
    older_than_s: float,
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> list[Invocation]:
    """The invocations `invoke cancel` ends: those named, or the open ones selected by age
    and (with `stuck`) only the stuck ones."""
    if ids:
        return by_ids(admin, ids)
    selection = Selection(older_than_s=older_than_s, max_retries=max_retries)
    return [
        i
        for i in selection.apply(open_invocations(admin))
        if not stuck or i.stuck_reason(max_retries) is not None
    ]


def check_kill(invocations: Iterable[Invocation], *, force: bool) -> None:
    """Killing a Checkout needs `force`: the refusal says why and what to do instead."""
    checkouts = [i.id for i in invocations if i.service == _CHECKOUT]
    if checkouts and not force:
        raise NexusError(KILL_REFUSED.format(ids=", ".join(checkouts)))


def status_of(admin: AdminClient, invocation_id: str) -> str | None:
    """The invocation's status now, or None once Restate no longer lists it."""
    rows = admin.query(f"SELECT status FROM sys_invocation WHERE id = {_quoted([invocation_id])}")
    return str(rows[0]["status"]) if rows else None


def seat_status(admin: AdminClient, seat: str) -> str:
    """A seat's Ticket status (AVAILABLE when it has no state)."""
    rows = admin.query(
        "SELECT value_utf8 FROM state WHERE service_name = 'Ticket'"
        f" AND key = '{TICKET}' AND service_key = {_quoted([seat])}"
    )
    if not rows:
        return "AVAILABLE"
    return TicketState.model_validate(json.loads(rows[0]["value_utf8"])).status.value


def end_step(
    admin: AdminClient, inv: Invocation, *, kill: bool = False, wait_s: float = 30.0
) -> StepFn:
    """A step that cancels (or kills) one invocation and waits, bounded, until Restate
    reports it completed; for a seat-bound one it names the seat's status afterwards."""
    verb = "kill" if kill else "cancel"
    about = f"{inv.target}" + (f", seat {inv.seat}" if inv.seat else "")

    def step(ctx: StepContext) -> Result:
        if inv.status == "completed":
            return Result.ok(f"{about}: already completed")
        if ctx.check:
            return Result.changed(f"would {verb} {about} ({inv.status})")
        started = time.monotonic()
        (admin.kill if kill else admin.cancel)(inv.id)
        status = status_of(admin, inv.id)
        while status not in (None, "completed") and time.monotonic() - started < wait_s:
            time.sleep(0.2)
            status = status_of(admin, inv.id)
        took = time.monotonic() - started
        if status not in (None, "completed"):
            hint = "" if kill else CANCEL_UNSEEN
            raise NotConverged(f"asked to {verb} {about}: still {status} after {wait_s:g}s{hint}")
        seat = f"; seat {inv.seat} now {seat_status(admin, inv.seat)}" if inv.seat else ""
        done = "killed" if kill else "cancelled"
        return Result.changed(f"{done} {about}: ended in {took:.1f}s{seat}")

    return step


def purge_step(admin: AdminClient, *, older_than_s: float = 0.0) -> StepFn:
    """A step that purges completed invocations (journal and metadata) and checks that
    Restate no longer lists them."""

    def step(ctx: StepContext) -> Result:
        ids = completed_invocations(admin, older_than_s=older_than_s)
        if not ids:
            return Result.ok("no completed invocations to purge")
        if ctx.check:
            return Result.changed(f"would purge {len(ids)} completed invocation(s)")
        for invocation_id in ids:
            admin.purge(invocation_id)
        left = [i for i in ids if status_of(admin, i) is not None]
        if left:
            raise NotConverged(f"{len(left)} purged invocation(s) still listed: {left[0]}, ...")
        return Result.changed(f"purged {len(ids)} completed invocation(s)")

    return step
