"""Models and wire names (service/models.py)."""

from __future__ import annotations

import json

import pytest
from restate.serde import PydanticJsonSerde

from service.models import (
    GLOBAL_EVENT,
    ChargeOutcome,
    CheckoutRequest,
    MailRequest,
    SeatEntry,
    SeatUpdate,
    TicketState,
    TicketStatus,
    TicketView,
    event_of,
)


@pytest.mark.parametrize(
    ("ticket_id", "event"),
    [
        ("e:s", "e"),
        ("concert-2025:A-12", "concert-2025"),
        ("e:s:extra", "e"),
        ("e:", "e"),
        ("s", GLOBAL_EVENT),
        (":s", GLOBAL_EVENT),
        (":", GLOBAL_EVENT),
        ("", GLOBAL_EVENT),
        ("Oper:Ä1", "Oper"),
    ],
)
def test_event_of(ticket_id: str, event: str) -> None:
    assert event_of(ticket_id) == event


def test_global_event_name() -> None:
    assert GLOBAL_EVENT == "global"


def test_ticket_status_values_are_wire_strings() -> None:
    assert [s.value for s in TicketStatus] == ["AVAILABLE", "RESERVED", "SOLD"]
    assert TicketStatus("SOLD") is TicketStatus.SOLD
    assert json.dumps(TicketStatus.RESERVED) == '"RESERVED"'


def test_default_ticket_state() -> None:
    state = TicketState()
    assert state.status is TicketStatus.AVAILABLE
    assert state.reserved_by is None
    assert state.reserved_until is None
    assert state.hold_id is None
    assert state.version == 0


def test_view_uses_wire_names() -> None:
    state = TicketState(
        status=TicketStatus.RESERVED,
        reservedBy="alice",
        reservedUntil=1_700_000_000_000,
        holdId="h1",
        version=3,
    )
    view = state.view()
    assert isinstance(view, TicketView)
    assert view.model_dump(mode="json") == {
        "status": "RESERVED",
        "reservedBy": "alice",
        "reservedUntil": 1_700_000_000_000,
    }
    # the hold id and version are internal: never on the wire
    assert set(json.loads(view.model_dump_json())) == {"status", "reservedBy", "reservedUntil"}


def test_view_of_available_ticket_has_nulls() -> None:
    assert json.loads(TicketState().view().model_dump_json()) == {
        "status": "AVAILABLE",
        "reservedBy": None,
        "reservedUntil": None,
    }


def test_state_accepts_field_names_and_aliases() -> None:
    by_alias = TicketState(reservedBy="bob", reservedUntil=5, holdId="h")
    by_name = TicketState.model_validate(
        {"reserved_by": "bob", "reserved_until": 5, "hold_id": "h"}
    )
    assert by_alias == by_name
    assert by_alias.reserved_by == "bob"


@pytest.mark.parametrize("by_alias", [True, False])
def test_state_json_round_trip(by_alias: bool) -> None:
    state = TicketState(
        status=TicketStatus.SOLD, reservedBy="zoë", reservedUntil=None, holdId="h-1", version=7
    )
    text = state.model_dump_json(by_alias=by_alias)
    if by_alias:
        assert '"reservedBy":"zo' in text
        assert '"holdId":"h-1"' in text
    assert TicketState.model_validate_json(text) == state


def test_state_round_trip_through_restate_serde() -> None:
    """What ctx.set / ctx.get(type_hint=TicketState) do with the stored value."""
    serde: PydanticJsonSerde[TicketState] = PydanticJsonSerde(TicketState)
    state = TicketState(status=TicketStatus.RESERVED, reservedBy="u", reservedUntil=9, holdId="x")
    assert serde.deserialize(serde.serialize(state)) == state
    assert serde.deserialize(b"") is None


def test_view_round_trip_through_restate_serde() -> None:
    serde: PydanticJsonSerde[TicketView] = PydanticJsonSerde(TicketView)
    view = TicketState(status=TicketStatus.SOLD, reservedBy="u").view()
    raw = serde.serialize(view)
    assert json.loads(raw) == {"status": "SOLD", "reservedBy": "u", "reservedUntil": None}
    assert serde.deserialize(raw) == view


def test_state_rejects_unknown_status() -> None:
    with pytest.raises(ValueError):
        TicketState.model_validate({"status": "LOST"})


def test_seat_entry_and_update_json() -> None:
    update = SeatUpdate(id="e:1", status=TicketStatus.SOLD, version=2)
    assert SeatUpdate.model_validate_json(update.model_dump_json()) == update
    entry = SeatEntry(id="e:1", status=TicketStatus.SOLD)
    assert entry.model_dump(mode="json") == {"id": "e:1", "status": "SOLD"}


def test_other_model_defaults() -> None:
    assert CheckoutRequest(ticket_id="t", user_id="u").payment_method_id == "card_success"
    outcome = ChargeOutcome(status="pending")
    assert (outcome.charge_id, outcome.detail, outcome.attempts) == (None, "", 0)
    mail = MailRequest(booking_id="b", ticket_id="t", user_id="u")
    assert mail.charge_id is None
    assert MailRequest.model_validate_json(mail.model_dump_json()) == mail
