"""Bad input: a fixed corpus of malformed requests to every public handler, plus
hypothesis-generated ones; each must get a fast 4xx and change nothing."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ops.base.errors import ApiError, TokenRejected
from ops.chaos.base import (
    ChaosContext,
    invocations,
    send,
    ticket_state,
)
from ops.operations.audit import read_tickets
from ops.testing.checks import CheckFailed, expect

BAD_INPUT_BUDGET_S = 1.0  # every malformed request answered within this
BAD_INPUT_TIMEOUT_S = 2.0  # no answer by then counts as a hang
FUZZ_EXAMPLES = 120  # hypothesis-generated bodies on top of the fixed corpus


@dataclass(frozen=True)
class Probe:
    """One malformed request: where it goes, what it carries, what it is."""

    path: str
    body: bytes
    label: str
    content_type: str | None = "application/json"
    tolerated_2xx: bool = False  # a read that may answer 200 with nothing to show


TICKET_HANDLERS = ("reserve", "confirm", "release", "cleanup", "get")
NEST = 50_000
MEGABYTE = 1_000_000


def _j(value: Any) -> bytes:
    """JSON with \\u escapes (lone surrogates become `"\\ud800"`, as a client may send)."""
    return json.dumps(value, ensure_ascii=True).encode()


def _quote_key(key: str) -> str:
    return quote(key.encode("utf-8", "surrogatepass"), safe="")


def unparseable_bodies() -> list[tuple[str, bytes]]:
    """Bodies no handler can read as JSON (or as a Python value)."""
    return [
        ("broken JSON", b'{"ticketId": "x", "userId": '),
        ("one brace", b"{"),
        ("trailing garbage", b'{"a": 1}}'),
        ("single quotes", b"{'ticketId': 'x'}"),
        ("invalid UTF-8", b'"\xff\xfe\xfd"'),
        ("raw control char in a string", b'"a\x01b"'),
        ("NUL byte", b"\x00"),
        (f"nested {NEST} deep", b"[" * NEST + b"]" * NEST),
        ("unterminated 1 MB string", b'{"pad": "' + b"x" * MEGABYTE),
        ("5000-digit integer", b"1" * 5000),
    ]


def id_values(long: str) -> list[tuple[str, Any]]:
    """JSON values that are not acceptable ids (never null, never an object)."""
    return [
        ("number", 12),
        ("float", 1.5e308),
        ("bool", True),
        ("list", ["u"]),
        ("empty string", ""),
        ("blank string", "   "),
        ("10000-char id", long),
        ("201-char id", "u" * 201),
        ("lone surrogate \\ud800", "\ud800"),
        ("lone surrogate \\udfff", "x\udfffy"),
        ("NUL", "a\u0000b"),
        ("escape sequence", "\u001b[31mred"),
        ("C1 control \\u0085", "a\u0085b"),
        ("DEL", "\u007f"),
        ("1 MB id", "x" * MEGABYTE),
    ]


def deep_field(name: str, extra: str = "") -> bytes:
    """`{..., name: [[[...]]]}` nested NEST deep."""
    return ("{" + extra + f'"{name}": ').encode() + b"[" * NEST + b"]" * NEST + b"}"


def bad_input_probes(prefix: str) -> list[Probe]:
    """The fixed corpus: every public handler, every kind of malformed input."""
    long = "x" * 10_000
    probes: list[Probe] = []
    seat = f"{prefix}bad-seat"
    ticket_path = f"/Ticket/{_quote_key(seat)}"
    # Unreadable bodies, everywhere.
    targets = [("/Checkout/process", False)]
    targets += [(f"{ticket_path}/{h}", False) for h in TICKET_HANDLERS]
    targets += [(f"/SeatMap/{_quote_key(prefix.rstrip(':'))}/get", False)]
    for path, _ in targets:
        for label, body in unparseable_bodies():
            probes.append(Probe(path, body, label))
        probes.append(Probe(path, b"{}", "text/plain body", content_type="text/plain"))
    # Checkout: wrong shapes, missing, wrong and malformed fields.
    good = {"ticketId": seat, "userId": "fuzzer", "paymentMethodId": "card_success"}
    for label, value in [("array", []), ("string", "x"), ("null", None), ("number", 42)]:
        probes.append(Probe("/Checkout/process", _j(value), f"body is {label}"))
    probes.append(Probe("/Checkout/process", b"", "empty body"))
    probes.append(Probe("/Checkout/process", b"{}", "empty object"))
    for name in ("ticketId", "userId"):
        probes.append(Probe("/Checkout/process", _j(_without(good, name)), f"missing {name}"))
        probes.append(Probe("/Checkout/process", _j({**good, name: None}), f"{name} null"))
        probes.append(Probe("/Checkout/process", deep_field(name), f"{name} nested {NEST} deep"))
    for name in ("ticketId", "userId", "paymentMethodId"):
        for label, value in [*id_values(long), ("object", {"id": 1})]:
            probes.append(Probe("/Checkout/process", _j({**good, name: value}), f"{name}: {label}"))
    # Ticket writes: a bad userId / holdId, bare or wrapped.
    for handler in ("reserve", "confirm", "release"):
        path = f"{ticket_path}/{handler}"
        for label, value in id_values(long):
            probes.append(Probe(path, _j(value), f"user {label}"))
            probes.append(Probe(path, _j({"userId": value}), f"userId {label}"))
        probes.append(Probe(path, _j({"userId": None}), "userId null"))
        probes.append(Probe(path, deep_field("userId"), f"userId nested {NEST} deep"))
    for handler in ("confirm", "release"):  # the holdId Checkout names its hold by
        path = f"{ticket_path}/{handler}"
        for label, value in id_values(long):
            probes.append(Probe(path, _j({"userId": "fuzzer", "holdId": value}), f"holdId {label}"))
        probes.append(Probe(path, _j({"holdId": None}), "holdId null"))
    for handler in ("reserve",):
        path = f"{ticket_path}/{handler}"
        for label, body in [("empty body", b""), ("null", b"null"), ("{}", b"{}")]:
            probes.append(Probe(path, body, label))
    path = f"{ticket_path}/cleanup"
    for label, value in id_values(long):
        probes.append(Probe(path, _j(value), f"hold {label}"))
        probes.append(Probe(path, _j({"holdId": value}), f"holdId {label}"))
    # Bad keys: a body each handler accepts, on a key no seat may have.
    keys = [
        ("10000-char key", long),
        ("201-char key", "k" * 201),
        ("empty key", ""),
        ("blank key", "   "),
        ("NUL in key", "a\u0000b"),
        ("newline in key", "a\nb"),
        ("C1 control in key", "\u0085"),
        ("lone surrogate in key (bad UTF-8)", "\ud800"),
    ]
    valid_body = {"reserve": _j("fuzzer"), "confirm": b"", "release": b"", "cleanup": b""}
    for label, key in keys:
        quoted = _quote_key(key)
        for handler in TICKET_HANDLERS:
            body = valid_body.get(handler, b"")
            probes.append(Probe(f"/Ticket/{quoted}/{handler}", body, f"{label}"))
        probes.append(Probe(f"/SeatMap/{quoted}/get", b"", label, tolerated_2xx=True))
    return probes


def _without(data: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != name}


def fuzz_probes(prefix: str, examples: int = FUZZ_EXAMPLES) -> list[Probe]:
    """Hypothesis-generated malformed bodies (derandomized, bounded); [] without hypothesis."""
    try:
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis import strategies as st
    except ImportError:
        return []
    seat = f"{prefix}bad-fuzz"
    ticket_path = f"/Ticket/{_quote_key(seat)}"
    ws = st.text(alphabet=" \t\r\n", min_size=1, max_size=4)
    forbidden = st.sampled_from(["\x00", "\x1f", "\x7f", "\x85", "\x9f", "\ud800", "\udbff"])
    safe_text = st.text(max_size=8).filter(lambda s: s.strip() != "")
    poisoned = st.tuples(st.text(max_size=6), forbidden, st.text(max_size=6)).map("".join)
    too_long = st.integers(201, 4000).map(lambda n: "x" * n)
    scalar = st.one_of(
        st.integers(), st.floats(), st.booleans(), st.just(""), ws, poisoned, too_long
    )
    leaf = st.one_of(st.none(), st.booleans(), st.integers(), safe_text)
    junk_keys = st.sampled_from(["a", "user", "ticket", "id", "x y", "\u00e9", "\U0001f3ab"])
    bad_id = st.one_of(scalar, st.lists(leaf, max_size=3))  # never null, never an object
    junk = st.dictionaries(junk_keys, leaf, max_size=3)

    def encode(value: Any, ascii_only: bool) -> bytes:
        text = json.dumps(value, ensure_ascii=ascii_only)
        return text.encode("utf-8", "surrogatepass")

    @st.composite
    def checkout_body(draw: st.DrawFn) -> bytes:
        body: dict[str, Any] = {**draw(junk), "ticketId": seat, "userId": "fuzzer"}
        name = draw(st.sampled_from(["ticketId", "userId", "paymentMethodId"]))
        how = draw(st.sampled_from(["bad", "null", "missing", "object"]))
        if how == "missing" and name != "paymentMethodId":
            del body[name]
        elif how == "null":
            body[name] = None
        elif how == "object":
            body[name] = draw(junk)
        else:
            body[name] = draw(bad_id)
        return encode(body, draw(st.booleans()))

    @st.composite
    def field_body(draw: st.DrawFn, name: str, may_be_null: bool) -> bytes:
        wrapped = draw(st.booleans())
        value = draw(bad_id if not (wrapped and may_be_null) else st.one_of(bad_id, st.none()))
        doc: Any = {**draw(junk), name: value} if wrapped else value
        return encode(doc, draw(st.booleans()))

    unreadable = st.one_of(
        st.binary(min_size=1, max_size=64).filter(_unreadable),
        st.builds(lambda d, n: encode(d, True)[:n], junk, st.integers(1, 20)).filter(_unreadable),
    )
    strategies = [
        st.tuples(st.just("/Checkout/process"), checkout_body()),
        st.tuples(st.just(f"{ticket_path}/reserve"), field_body("userId", True)),
        st.tuples(st.just(f"{ticket_path}/confirm"), field_body("userId", True)),
        st.tuples(st.just(f"{ticket_path}/release"), field_body("userId", True)),
        st.tuples(st.just(f"{ticket_path}/cleanup"), field_body("holdId", False)),
        st.tuples(st.sampled_from([f"{ticket_path}/get", f"{ticket_path}/reserve"]), unreadable),
        st.tuples(st.just(f"/SeatMap/{_quote_key(prefix.rstrip(':'))}/get"), unreadable),
    ]
    found: dict[tuple[str, bytes], Probe] = {}

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(strategies))
    def gather(case: tuple[str, bytes]) -> None:
        path, body = case
        found.setdefault((path, body), Probe(path, body, "generated"))

    gather()
    return list(found.values())


def _unreadable(body: bytes) -> bool:
    """Not JSON that Python can decode to a value (and not blank)."""
    if not body.strip():
        return False
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return True
    return False


def describe(probe: Probe) -> str:
    """The exact input, shortened for a report line."""
    body = probe.body
    shown = repr(body[:80]) + (f"... ({len(body)} bytes)" if len(body) > 80 else "")
    path = probe.path if len(probe.path) < 90 else probe.path[:60] + f"...({len(probe.path)})"
    return f"POST {path} [{probe.label}] {shown}"


def bad_input(cx: ChaosContext) -> str:
    """Malformed requests to every public handler: a fast 4xx each, nothing changes."""
    probes = bad_input_probes(cx.prefix)
    generated = fuzz_probes(cx.prefix)
    probes += generated
    slowest = 0.0
    failures: list[str] = []
    tolerated = hung = 0
    statuses: dict[int, int] = {}
    started = time.monotonic()
    client = cx.client(timeout=BAD_INPUT_TIMEOUT_S)
    keys: list[str] = []
    try:
        for n, probe in enumerate(probes):
            key = f"chaos-{cx.run_id}-bad-{n}."
            keys.append(key)
            a = send(
                client,
                probe.path,
                probe.body,
                headers={"Idempotency-Key": key},
                content_type=probe.content_type,
                timeout=BAD_INPUT_TIMEOUT_S,
            )
            slowest = max(slowest, a.seconds)
            if a.status is not None:
                statuses[a.status] = statuses.get(a.status, 0) + 1
            if a.status is None:
                failures.append(f"no answer within {BAD_INPUT_TIMEOUT_S:g}s: {describe(probe)}")
                # Restate retries it; on a Ticket it would hold the seat's queue: stop it.
                hung += _kill_unfinished(cx, key)
            elif a.status >= 500:
                failures.append(f"{a.status}: {describe(probe)}: {a.text[:120]}")
            elif a.status < 400 and not probe.tolerated_2xx:
                failures.append(f"accepted ({a.status}): {describe(probe)}: {a.text[:80]}")
            elif a.status < 400:
                tolerated += 1
            elif a.seconds > BAD_INPUT_BUDGET_S:
                failures.append(f"answered after {a.seconds:.2f}s: {describe(probe)}")
        took = time.monotonic() - started
        killed = hung + _kill_unfinished(cx, f"chaos-{cx.run_id}-bad-")
        admin = cx.admin()
        try:
            written = read_tickets(admin, f"{cx.prefix}bad")
        finally:
            admin.close()
        for seat in (f"{cx.prefix}bad-seat", f"{cx.prefix}bad-fuzz"):
            state = ticket_state(client, seat)
            expect(state["status"] == "AVAILABLE", f"{seat} became {state['status']}")
    finally:
        client.close()
    expect(not written, f"malformed input wrote state for {sorted(written)[:3]}")
    if killed and not failures:
        failures.append(f"{killed} invocations were still retrying after the run (killed)")
    codes = ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items()))
    cx.details = failures
    if failures:
        killed_note = f" (killed {killed} invocations Restate kept retrying)" if killed else ""
        raise CheckFailed(
            f"{len(failures)}/{len(probes)} malformed requests misbehaved{killed_note}; first: "
            + " | ".join(failures[:3])
        )
    extra = f", {tolerated} SeatMap reads of malformed keys answered 200 []" if tolerated else ""
    fuzz = f"{len(generated)} generated" if generated else "hypothesis not installed"
    return (
        f"{len(probes)} malformed requests ({fuzz}) in {took:.1f}s: {codes}{extra};"
        f" slowest {slowest * 1000:.0f} ms; no state written"
    )


def _kill_unfinished(cx: ChaosContext, key_prefix: str) -> int:
    """Kill invocations of these requests that Restate is still retrying."""
    rows = [r for r in invocations(cx, key_prefix) if r["status"] != "completed"]
    if rows:
        admin = cx.admin()
        try:
            for row in rows:
                try:
                    admin.kill(str(row["id"]))
                except ApiError as exc:  # an error answer: it ended since the query
                    if exc.status is None or isinstance(exc, TokenRejected):
                        raise
        finally:
            admin.close()
    return len(rows)
