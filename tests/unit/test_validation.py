"""Input validation (service/validation.py, service.checkout.parse_checkout): every bad
request is a terminal 400 that names the field, never an exception Restate would retry."""

from __future__ import annotations

import json
from typing import Any

import pytest
from restate import TerminalError

from service.checkout import parse_checkout
from service.models import DEFAULT_PAYMENT_METHOD, MAX_ID_LENGTH, CheckoutRequest
from service.validation import (
    bad_request,
    check_id,
    holder_from,
    optional_id,
    parse_json,
    require_object,
    user_id_from,
)


def body(value: Any) -> bytes:
    return json.dumps(value).encode()


def expect_400(fn: Any, *args: Any, **kwargs: Any) -> TerminalError:
    with pytest.raises(TerminalError) as info:
        fn(*args, **kwargs)
    assert info.value.status_code == 400
    return info.value


GOOD = {"ticketId": "concert:A-12", "userId": "alice", "paymentMethodId": "card_decline"}


# --- building blocks ---------------------------------------------------------------


def test_bad_request_is_terminal_400() -> None:
    err = bad_request("nope")
    assert isinstance(err, TerminalError)
    assert err.status_code == 400
    assert err.message == "nope"


@pytest.mark.parametrize("raw", [b"", b"   ", b"\n\t"])
def test_parse_json_empty_body(raw: bytes) -> None:
    err = expect_400(parse_json, raw)
    assert "empty" in err.message
    assert parse_json(raw, allow_empty=True) is None


@pytest.mark.parametrize("raw", [b"{", b"{'a': 1}", b"not json", b'{"a": 1,}', b"\xff\xfe\x00"])
def test_parse_json_malformed(raw: bytes) -> None:
    err = expect_400(parse_json, raw)
    assert "not valid JSON" in err.message


def test_parse_json_valid_values() -> None:
    assert parse_json(b'{"a": [1, 2]}') == {"a": [1, 2]}
    assert parse_json(b'"alice"') == "alice"
    assert parse_json(b"  {}  ") == {}


@pytest.mark.parametrize("value", [[], "x", 1, 1.5, None, True])
def test_require_object_rejects_non_objects(value: Any) -> None:
    err = expect_400(require_object, value)
    assert "JSON object" in err.message
    assert type(value).__name__ in err.message


def test_require_object_passes_dict_through() -> None:
    data = {"a": 1}
    assert require_object(data) is data


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (None, "Missing field 'ticketId'"),
        (12, "Field 'ticketId' must be a string, got int"),
        (1.5, "must be a string, got float"),
        (True, "must be a string, got bool"),
        (["a"], "must be a string, got list"),
        ({"a": 1}, "must be a string, got dict"),
        ("", "Field 'ticketId' must not be empty"),
        ("   ", "must not be empty"),
        ("\t\n", "must not be empty"),
        ("x" * (MAX_ID_LENGTH + 1), f"Field 'ticketId' is longer than {MAX_ID_LENGTH}"),
    ],
)
def test_check_id_rejects(value: Any, fragment: str) -> None:
    err = expect_400(check_id, "ticketId", value)
    assert fragment in err.message
    assert "ticketId" in err.message


@pytest.mark.parametrize(
    "value",
    ["a", "x" * MAX_ID_LENGTH, "concert:A-12", "Jörg", "用户", "🎫" * MAX_ID_LENGTH, " a "],
)
def test_check_id_accepts(value: str) -> None:
    assert check_id("userId", value) == value


def test_optional_id_default_and_present() -> None:
    assert optional_id("paymentMethodId", {}, "card_success") == "card_success"
    assert optional_id("paymentMethodId", {"paymentMethodId": "x"}, "d") == "x"
    err = expect_400(optional_id, "paymentMethodId", {"paymentMethodId": ""}, "d")
    assert "paymentMethodId" in err.message
    err = expect_400(optional_id, "paymentMethodId", {"paymentMethodId": 5}, "d")
    assert "paymentMethodId" in err.message


# --- user_id_from (Ticket reserve/confirm/release bodies) ----------------------------


@pytest.mark.parametrize("raw", [b'"alice"', b'{"userId": "alice"}', b' {"userId":"alice","x":1} '])
@pytest.mark.parametrize("required", [True, False])
def test_user_id_from_accepts_string_or_object(raw: bytes, required: bool) -> None:
    assert user_id_from(raw, required=required) == "alice"


def test_user_id_from_optional_absent() -> None:
    assert user_id_from(b"", required=False) is None
    assert user_id_from(b"{}", required=False) is None
    assert user_id_from(b'{"other": 1}', required=False) is None


def test_holder_from_reads_the_checkouts_hold_id() -> None:
    saga = body({"userId": "alice", "holdId": "inv_1"})
    assert holder_from(saga, required=True) == ("alice", "inv_1")
    assert holder_from(body({"holdId": "inv_1"}), required=False) == (None, "inv_1")
    assert holder_from(b'"alice"', required=False) == ("alice", None)
    assert holder_from(b"", required=False) == (None, None)


@pytest.mark.parametrize("value", ["", "  ", 7, None, ["h"], "h\u0000", "h" * (MAX_ID_LENGTH + 1)])
def test_holder_from_refuses_a_bad_hold_id(value: Any) -> None:
    err = expect_400(holder_from, body({"userId": "alice", "holdId": value}), required=False)
    assert "holdId" in err.message


def test_user_id_from_required_missing() -> None:
    err = expect_400(user_id_from, b"{}", required=True)
    assert "Missing field 'userId'" in err.message
    expect_400(user_id_from, b"", required=True)


@pytest.mark.parametrize(
    "raw", [b'""', b'"  "', b"42", b"[]", b'{"userId": 7}', b'{"userId": ""}', b'{"userId": null}']
)
@pytest.mark.parametrize("required", [True, False])
def test_user_id_from_bad_values_name_the_field(raw: bytes, required: bool) -> None:
    err = expect_400(user_id_from, raw, required=required)
    assert "userId" in err.message


def test_user_id_from_optional_null_is_absent() -> None:
    assert user_id_from(b"null", required=False) is None


def test_user_id_from_required_null_is_a_400() -> None:
    err = expect_400(user_id_from, b"null", required=True)
    assert "userId" in err.message


def test_user_id_from_malformed_json() -> None:
    err = expect_400(user_id_from, b'{"userId": ', required=False)
    assert "not valid JSON" in err.message


def test_user_id_from_too_long() -> None:
    err = expect_400(user_id_from, body("u" * (MAX_ID_LENGTH + 1)), required=True)
    assert "userId" in err.message


# --- parse_checkout ------------------------------------------------------------------


def test_parse_checkout_full() -> None:
    req = parse_checkout(body(GOOD))
    assert req == CheckoutRequest(
        ticket_id="concert:A-12", user_id="alice", payment_method_id="card_decline"
    )


def test_parse_checkout_default_payment_method() -> None:
    req = parse_checkout(body({"ticketId": "t1", "userId": "u1"}))
    assert req.payment_method_id == DEFAULT_PAYMENT_METHOD == "card_success"


def test_parse_checkout_ignores_unknown_fields() -> None:
    req = parse_checkout(body({**GOOD, "extra": {"nested": True}}))
    assert req.ticket_id == "concert:A-12"


def test_parse_checkout_unicode_ids() -> None:
    req = parse_checkout(body({"ticketId": "Oper:Reihe-Ä/12", "userId": "Zoë 用户"}))
    assert req.ticket_id == "Oper:Reihe-Ä/12"
    assert req.user_id == "Zoë 用户"


@pytest.mark.parametrize("raw", [b"", b"{", b"[1, 2]", b'"ticket"', b"null", b"3"])
def test_parse_checkout_bad_bodies(raw: bytes) -> None:
    expect_400(parse_checkout, raw)


@pytest.mark.parametrize("field", ["ticketId", "userId", "paymentMethodId"])
@pytest.mark.parametrize(
    "bad", [None, 1, True, [], {}, "", "   ", "x" * (MAX_ID_LENGTH + 1)], ids=repr
)
def test_parse_checkout_bad_field_names_it(field: str, bad: Any) -> None:
    data = dict(GOOD)
    data[field] = bad
    err = expect_400(parse_checkout, body(data))
    assert field in err.message


@pytest.mark.parametrize("field", ["ticketId", "userId"])
def test_parse_checkout_missing_field_names_it(field: str) -> None:
    data = dict(GOOD)
    del data[field]
    err = expect_400(parse_checkout, body(data))
    assert f"Missing field '{field}'" in err.message


def test_parse_checkout_checks_ticket_before_user() -> None:
    err = expect_400(parse_checkout, b"{}")
    assert "ticketId" in err.message


@pytest.mark.parametrize("raw", [b"[" * 100_000, b'{"a":' * 100_000])
def test_deeply_nested_json_is_a_400(raw: bytes) -> None:
    expect_400(parse_checkout, raw)


@pytest.mark.parametrize("field", ["ticketId", "userId"])
def test_ids_with_lone_surrogates_are_rejected_or_encodable(field: str) -> None:
    data = {**GOOD, field: "PLACEHOLDER"}
    raw = json.dumps(data).replace("PLACEHOLDER", "\\ud800").encode()
    try:
        req = parse_checkout(raw)
    except TerminalError as exc:
        assert exc.status_code == 400
        assert field in exc.message
        return
    req.model_dump_json()  # what Restate does with the request's ids
    req.ticket_id.encode()
    req.user_id.encode()
