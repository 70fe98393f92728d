"""Input parsing that turns every malformed request into a terminal 400."""

from __future__ import annotations

import json
from typing import Any

from restate import ObjectSharedContext, TerminalError, VirtualObject

from service.models import MAX_ID_LENGTH

# For `accept`: the handler takes a body under any Content-Type (or none).
ANY_CONTENT_TYPE = "*/*"


def accept_any_body(service: VirtualObject, handler: str) -> None:
    """Let the ingress pass `handler` an empty body under any content type (`curl -d ''`
    sends a form type), as well as `{}`; the handler validates what it gets.

    The ingress checks a body before the handler runs. The SDK describes a `bytes`
    input with a JSON schema (`true`), and any schema makes restate-server refuse an
    empty body that carries a content type ("Empty body not allowed"). Without a schema,
    a handler with `accept="*/*"` gets any body, under any type or none."""
    service.handlers[handler].handler_io.input_type = None


def check_read_body(ctx: ObjectSharedContext, body: bytes) -> None:
    """A read's body: empty (under any content type, or none), or JSON sent as JSON.
    A non-empty body under another content type is a 400, as before `accept_any_body`,
    when the ingress refused it."""
    if not body.strip():
        return
    headers = {k.lower(): v for k, v in ctx.request().headers.items()}
    content_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise bad_request(
            f"A non-empty body must be JSON (Content-Type: application/json),"
            f" not {content_type or 'untyped'}"
        )
    parse_json(body)


def bad_request(message: str) -> TerminalError:
    """A non-retryable 400: Restate answers it at once and changes nothing."""
    return TerminalError(message, status_code=400)


def parse_json(body: bytes, *, allow_empty: bool = False) -> Any:
    """Decode a JSON body; an empty body is `None` when allowed."""
    if not body.strip():
        if allow_empty:
            return None
        raise bad_request("Request body is empty: expected a JSON object")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad_request(f"Request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise bad_request("Request body is nested too deeply") from None
    except ValueError as exc:  # e.g. an integer longer than Python's 4300-digit limit
        raise bad_request(f"Request body holds a value that cannot be read: {exc}") from None


def require_object(value: Any) -> dict[str, Any]:
    """Insist on a JSON object."""
    if not isinstance(value, dict):
        raise bad_request(f"Request body must be a JSON object, got {type(value).__name__}")
    return value


def check_id(field: str, value: Any) -> str:
    """A non-empty string id of bounded length, named in the error."""
    if value is None:
        raise bad_request(f"Missing field '{field}'")
    if not isinstance(value, str):
        raise bad_request(f"Field '{field}' must be a string, got {type(value).__name__}")
    if not value.strip():
        raise bad_request(f"Field '{field}' must not be empty")
    if len(value) > MAX_ID_LENGTH:
        raise bad_request(f"Field '{field}' is longer than {MAX_ID_LENGTH} characters")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 or 0xD800 <= ord(c) < 0xE000 for c in value):
        raise bad_request(f"Field '{field}' contains control or surrogate characters")
    return value


def optional_id(field: str, body: dict[str, Any], default: str) -> str:
    """A field that falls back to `default` when absent."""
    return default if field not in body else check_id(field, body[field])


def user_id_from(body: bytes, *, required: bool) -> str | None:
    """The userId of a Ticket call: a JSON string or `{"userId": ...}`."""
    return holder_from(body, required=required)[0]


def holder_from(body: bytes, *, required: bool) -> tuple[str | None, str | None]:
    """`(userId, holdId)` of a Ticket call: `"user"`, `{"userId": ...}` or, from the
    Checkout saga, `{"userId": ..., "holdId": ...}`; the holdId is None when absent."""
    if required and not body.strip():
        raise bad_request('Missing field \'userId\': send "user" or {"userId": "user"}')
    value = parse_json(body, allow_empty=not required)
    if value is None:
        if required:
            raise bad_request("Missing field 'userId'")
        return None, None
    if not isinstance(value, dict):
        return check_id("userId", value), None
    hold_id = None if "holdId" not in value else check_id("holdId", value["holdId"])
    if "userId" not in value and not required:
        return None, hold_id
    return check_id("userId", value.get("userId")), hold_id
