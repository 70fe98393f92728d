"""Invocations as read from the admin SQL (ops/clients/invocations.py): parsing, the stuck
classification, selection and rendering, the kill refusal, and the audit's use of it."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import httpx
import pytest

from ops.base.errors import ConfigError, NexusError
from ops.clients.admin import AdminClient
from ops.clients.invocations import (
    Selection,
    by_ids,
    check_kill,
    from_row,
    open_invocations,
    parse_duration,
    table_lines,
    ticket_id_of_input,
    with_seats,
)
from ops.operations.audit import check

NOW = 1_764_520_000_000  # 2025-11-30T16:26:40Z
CHECKOUT_ID = "inv_1ebPkxAd0hqz0snLun9SxDg9As64NoXv6v"
TICKET_ID = "inv_1iRNMmrJXQ2B3nUp25XDQ3pybkMSuY9S3T"


def row(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": CHECKOUT_ID,
        "target": "Checkout/process",
        "target_service_name": "Checkout",
        "target_service_key": None,
        "target_handler_name": "process",
        "status": "running",
        "created_at": "2025-11-30T16:25:40.000Z",
        "modified_at": "2025-11-30T16:26:00.000Z",
        "retry_count": 1,
        "pinned_deployment_id": "dp_15k5ug45tpp2PPaPtTOt5IJ",
    }
    return {**base, **over}


def test_a_row_becomes_an_invocation() -> None:
    inv = from_row(row(last_failure="[500 Internal] boom\nTraceback ...\n  line"))
    assert inv.id == CHECKOUT_ID and inv.service == "Checkout" and inv.handler == "process"
    assert inv.age_s(NOW) == 60.0
    assert inv.last_failure == "[500 Internal] boom"  # the traceback is left out
    assert inv.pinned_deployment == "dp_15k5ug45tpp2PPaPtTOt5IJ"
    assert inv.seat is None  # a checkout's seat comes from state or its input


def test_a_ticket_invocation_names_its_seat_by_key() -> None:
    inv = from_row(
        row(
            id=TICKET_ID,
            target="Ticket/ev:A1/hold",
            target_service_name="Ticket",
            target_service_key="ev:A1",
            target_handler_name="hold",
        )
    )
    assert inv.seat == "ev:A1"


def test_unpinned_invocation_shows_the_deployment_it_tried() -> None:
    inv = from_row(row(pinned_deployment_id=None, last_attempt_deployment_id="dp_other"))
    assert inv.pinned_deployment == "dp_other"


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({}, None),
        ({"status": "suspended"}, None),
        ({"status": "backing-off", "retry_count": 3}, None),
        ({"status": "paused"}, "paused"),
        (
            {
                "status": "backing-off",
                "last_failure": "[570 Journal mismatch] name: charge != fraud-check",
                "last_failure_error_code": "RT0016",
            },
            "journal mismatch",
        ),
        ({"status": "backing-off", "last_failure_error_code": "RT0016"}, "journal mismatch"),
        (
            {"status": "backing-off", "last_failure": "[571 Protocol violation] x"},
            "non-transient failure 571 Protocol violation",
        ),
        ({"status": "backing-off", "retry_count": 11}, "retried 11 times"),
        ({"status": "running", "retry_count": 11}, "retried 11 times"),
        ({"status": "completed", "retry_count": 50}, None),
    ],
)
def test_stuck_classification(over: dict[str, Any], reason: str | None) -> None:
    assert from_row(row(**over)).stuck_reason(max_retries=10) == reason


def test_the_retry_bound_is_a_parameter() -> None:
    inv = from_row(row(status="backing-off", retry_count=3))
    assert inv.stuck_reason(max_retries=2) == "retried 3 times"
    assert inv.stuck_reason(max_retries=3) is None


def input_entry(body: bytes, headers: list[dict[str, str]] | None = None) -> str:
    return json.dumps(
        {"Command": {"Input": {"headers": headers or [], "payload": list(body), "name": ""}}}
    )


def test_seat_asked_for_is_read_from_the_input_payload_only() -> None:
    body = b'{"ticketId":"ev:A1","userId":"alice","paymentMethodId":"card_success"}'
    secret = [{"name": "authorization", "value": "Bearer key_secret"}]
    assert ticket_id_of_input(input_entry(body, secret)) == "ev:A1"


@pytest.mark.parametrize(
    "entry",
    [
        "not json",
        json.dumps({"Command": {"Call": {}}}),
        input_entry(b"not json"),
        input_entry(b'["ev:A1"]'),
        input_entry(b'{"ticketId": 7}'),
    ],
)
def test_unreadable_input_names_no_seat(entry: str) -> None:
    assert ticket_id_of_input(entry) is None


def test_a_checkout_gets_the_seat_held_for_it_else_the_one_it_asked_for() -> None:
    a = from_row(row())
    b = from_row(row(id="inv_1bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"))
    ticket = from_row(row(id=TICKET_ID, target_service_name="Ticket", target_service_key="x:1"))
    out = with_seats(
        [a, b, ticket],
        held={a.id: "ev:A1"},
        asked={a.id: "ev:A1", b.id: "ev:B2"},
    )
    assert [(i.seat, i.holds_seat) for i in out] == [
        ("ev:A1", True),
        ("ev:B2", False),
        ("x:1", False),
    ]


def test_selection_puts_stuck_work_first_then_oldest() -> None:
    young = from_row(row(id="inv_young", created_at="2025-11-30T16:26:30Z"))
    old = from_row(row(id="inv_old", created_at="2025-11-30T16:20:00Z"))
    stuck = from_row(row(id="inv_stuck", status="paused", created_at="2025-11-30T16:26:35Z"))
    ordered = Selection(now=NOW).apply([young, old, stuck])
    assert [i.id for i in ordered] == ["inv_stuck", "inv_old", "inv_young"]


def test_selection_filters() -> None:
    a = from_row(row(id="inv_a", status="backing-off"))
    b = from_row(row(id="inv_b", target_service_name="Ticket", created_at="2025-11-30T16:26:39Z"))
    assert [i.id for i in Selection(status="backing-off", now=NOW).apply([a, b])] == ["inv_a"]
    assert [i.id for i in Selection(service="Ticket", now=NOW).apply([a, b])] == ["inv_b"]
    assert [i.id for i in Selection(older_than_s=30, now=NOW).apply([a, b])] == ["inv_a"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0), ("1d", 86400.0), ("500ms", 0.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration("--older-than", text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "-1m", "m", "1 m 2"])
def test_bad_duration_names_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match="--older-than takes a duration"):
        parse_duration("--older-than", text)


def test_table_shows_seat_age_retries_failure_and_deployment() -> None:
    inv = replace(
        from_row(
            row(
                status="backing-off",
                retry_count=12,
                last_failure="[500 Internal] boom",
            )
        ),
        seat="ev:A1",
        holds_seat=True,
    )
    lines = table_lines([inv], NOW)
    assert lines[0].split()[:6] == ["ID", "TARGET", "STATUS", "SEAT", "AGE", "RETRY"]
    cells = lines[1].split()
    assert cells[:3] == [CHECKOUT_ID, "Checkout/process", "backing-off"]
    assert "ev:A1 (held)" in lines[1] and " 60s " in lines[1]
    assert "dp_15k5ug45tpp2PPaPtTOt5IJ" in lines[1] and lines[1].endswith("retried 12 times")
    assert lines[2].strip() == "last failure: [500 Internal] boom"
    assert lines[-1] == "1 open, 1 stuck"
    assert table_lines([], NOW) == ["no open invocations"]


def test_json_record() -> None:
    inv = from_row(row(status="paused"))
    record = inv.to_dict(NOW)
    assert record["stuck"] == "paused" and record["age_s"] == 60.0
    assert json.loads(json.dumps(record)) == record


def test_kill_of_a_checkout_is_refused_without_force() -> None:
    checkout = from_row(row())
    with pytest.raises(NexusError) as info:
        check_kill([checkout], force=False)
    message = str(info.value)
    assert CHECKOUT_ID in message and "seat stays held" in message
    assert "Nothing was changed" in message
    check_kill([checkout], force=True)
    check_kill([from_row(row(target_service_name="Ticket"))], force=False)


# --- against a stand-in admin API (MockTransport) ------------------------------------


def sql_admin(answer: Any) -> tuple[AdminClient, list[str]]:
    """An AdminClient whose /query answers `answer(sql)` and records each query."""
    queries: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sql = json.loads(request.content)["query"]
        queries.append(sql)
        return httpx.Response(200, json={"rows": answer(sql)})

    return AdminClient("http://admin.test", transport=httpx.MockTransport(handler)), queries


def test_open_invocations_finds_each_checkouts_seat() -> None:
    held = json.dumps(
        {"status": "RESERVED", "reserved_by": "alice", "hold_id": CHECKOUT_ID, "version": 1}
    )
    body = b'{"ticketId":"ev:A1","userId":"alice"}'

    def answer(sql: str) -> list[dict[str, Any]]:
        if "FROM sys_invocation" in sql:
            return [row()]
        if "FROM state" in sql:
            return [{"service_key": "ev:A1", "value_utf8": held}]
        if "FROM sys_journal" in sql:
            return [{"id": CHECKOUT_ID, "entry_json": input_entry(body)}]
        raise AssertionError(sql)

    admin, queries = sql_admin(answer)
    [inv] = open_invocations(admin, service="Checkout", status="running")
    assert inv.seat == "ev:A1" and inv.holds_seat
    assert "target_service_name = 'Checkout'" in queries[0] and "status = 'running'" in queries[0]
    assert "status != 'completed'" in queries[0]


def test_by_ids_refuses_malformed_and_unknown_ids_before_acting() -> None:
    admin, queries = sql_admin(lambda sql: [])
    with pytest.raises(ConfigError, match=r"not an invocation id.*inv_x; DROP"):
        by_ids(admin, ["inv_x; DROP TABLE"])
    assert queries == []
    with pytest.raises(ConfigError, match=f"no such invocation on this server: {CHECKOUT_ID}"):
        by_ids(admin, [CHECKOUT_ID])


# --- the audit ----------------------------------------------------------------------


def test_audit_fails_beside_stuck_work_and_names_it() -> None:
    inv = replace(
        from_row(
            row(
                status="backing-off",
                last_failure="[570 Journal mismatch] name: charge != fraud-check",
                last_failure_error_code="RT0016",
            )
        ),
        seat="ev:A1",
        holds_seat=True,
    )
    report = check({}, [], stuck=[(inv, "journal mismatch")])
    assert not report.ok and report.checked["stuck"] == 1
    [violation] = report.violations
    assert CHECKOUT_ID in violation and "Checkout/process" in violation
    assert "seat ev:A1 held" in violation and "charge != fraud-check" in violation
    assert report.lines()[0].startswith("audit FAILED")


def test_audit_with_a_prefix_counts_stuck_work_inside_it_and_notes_the_rest() -> None:
    mine = replace(from_row(row(status="paused")), seat="run1-a")
    other = replace(from_row(row(id="inv_other", status="paused")), seat="run2-b")
    report = check({}, [], prefix="run1-", stuck=[(mine, "paused"), (other, "paused")])
    assert len(report.violations) == 1 and "run1-a" in report.violations[0]
    assert any("1 stuck invocation(s) outside prefix" in n for n in report.notes)
    assert check({}, [], stuck=[]).ok
