"""Fault injection (the ops/chaos package) without a server: scenario selection, skip logic, the
malformed-input corpus, and failure reporting."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from restate import TerminalError

from ops import chaos
from ops.base.environments import Environment, load
from ops.base.errors import NexusError
from ops.chaos import ChaosContext, run_chaos, select
from ops.chaos.bad_input import Probe, _j, bad_input_probes, describe, fuzz_probes
from ops.chaos.gateway import LONG_OUTAGE_S, SHORT_OUTAGE_S, payment_budget_s, service_environ
from ops.chaos.node_loss import node_loss_scenario
from ops.testing.checks import Outcome, Skip
from service import settings_names as names
from service.checkout import parse_checkout
from service.validation import check_id, holder_from, parse_json, user_id_from

LOCAL = """
[restate]
runtime = "binary"
ingress_url = "http://127.0.0.1:1"
admin_url = "http://127.0.0.1:2"

[service]
mode = "process"
url = "http://127.0.0.1:3"
{service}

[gateway]
mode = "{gateway}"
url = "http://127.0.0.1:4"

[state]
dir = "{state}"
"""

HOSTED = """
[restate]
runtime = "external"
ingress_url = "https://abc.env.eu.restate.cloud:8080"
admin_url = "https://abc.env.eu.restate.cloud:9070"

[service]
mode = "url"
url = "https://svc.example.com/"

[gateway]
mode = "external"
url = "https://pay.example.com"
"""


def env_from(tmp_path: Path, text: str, name: str = "chaos") -> Environment:
    file = tmp_path / f"{name}.toml"
    file.write_text(text)
    return load(str(file), root=tmp_path)


@pytest.fixture
def local(tmp_path: Path) -> Environment:
    """A binary environment that was never deployed: no PID files, nothing listening."""
    text = LOCAL.format(service="hold_seconds = 900", gateway="mock", state=tmp_path / "state")
    return env_from(tmp_path, text, "local-chaos")


@pytest.fixture
def hosted(tmp_path: Path) -> Environment:
    return env_from(tmp_path, HOSTED, "hosted-chaos")


def run(env: Environment, scenario: str) -> tuple[list[Outcome], str]:
    out = io.StringIO()
    outcomes = run_chaos(env, scenario, out=out)
    return outcomes, out.getvalue()


# --- selection -------------------------------------------------------------------------------


def test_unknown_scenario_names_the_known_ones(local: Environment) -> None:
    with pytest.raises(NexusError) as info:
        run_chaos(local, "meteor-strike", out=io.StringIO())
    message = str(info.value)
    assert "meteor-strike" in message
    for name in chaos.SCENARIOS:
        assert name in message


def test_select_all_one_and_a_list() -> None:
    assert select(None) == list(chaos.SCENARIOS)
    assert select("hot-seat") == ["hot-seat"]
    assert select("hot-seat, bad-input") == ["hot-seat", "bad-input"]
    with pytest.raises(NexusError, match="nope"):
        select("hot-seat,nope")
    with pytest.raises(NexusError):
        select(",")


def test_every_issue_scenario_is_there() -> None:
    assert list(chaos.SCENARIOS) == [
        "service-crash",
        "sold-seat-crash",
        "gateway-outage",
        "server-crash",
        "hot-seat",
        "hold-expiry",
        "bad-input",
        "unsigned",
        "restart-idempotence",
        "node-loss",
        "node-replace",
        "cluster-upgrade",
        "cluster-minor-upgrade",
        "rollout",
        "server-upgrade",
    ]


def test_node_loss_skips_outside_a_cluster(tmp_path: Path) -> None:
    env_file = tmp_path / "single.toml"
    env_file.write_text(
        '[restate]\nruntime = "binary"\ningress_url = "http://127.0.0.1:1"\n'
        'admin_url = "http://127.0.0.1:2"\n[service]\nmode = "process"\n'
        'url = "http://127.0.0.1:3"\n'
    )
    env = load(str(env_file), root=tmp_path)
    with pytest.raises(Skip, match="needs runtime = cluster"):
        node_loss_scenario(ChaosContext(env))


# --- skips (no network: each skips before its first request) ---------------------------------


def test_process_kills_skip_for_an_external_server(hosted: Environment) -> None:
    outcomes, text = run(hosted, "service-crash,server-crash,gateway-outage")
    assert [o.status for o in outcomes] == ["skipped"] * 3
    by_name = {o.name: o.detail for o in outcomes}
    assert "the server is external" in by_name["service-crash"]
    assert "runtime = binary" in by_name["server-crash"]
    assert "mock payment gateway" in by_name["gateway-outage"]
    assert text.splitlines()[-1] == "0 passed, 0 failed, 3 skipped"
    assert text.count("SKIP  ") == 3


def test_process_kills_skip_when_the_toolkit_runs_nothing(local: Environment) -> None:
    outcomes, _ = run(local, "service-crash,server-crash")
    assert [o.status for o in outcomes] == ["skipped", "skipped"]
    assert all("PID files" in o.detail and "deploy local-chaos" in o.detail for o in outcomes)


def test_service_crash_skips_a_hosted_service(tmp_path: Path) -> None:
    text = LOCAL.format(service="", gateway="mock", state=tmp_path / "s").replace(
        'mode = "process"', 'mode = "url"'
    )
    outcomes, _ = run(env_from(tmp_path, text), "service-crash")
    assert outcomes[0].status == "skipped"
    assert "does not run the service" in outcomes[0].detail


def test_unsigned_skips_without_signing(local: Environment) -> None:
    outcomes, _ = run(local, "unsigned")
    assert outcomes[0].status == "skipped"
    assert outcomes[0].detail == "request signing is off in this environment"


def test_hold_expiry_skips_with_a_long_hold(local: Environment) -> None:
    outcomes, text = run(local, "hold-expiry")
    assert outcomes[0].status == "skipped"
    assert "900s" in outcomes[0].detail and "hold_seconds <= 10" in outcomes[0].detail
    assert "SKIP  hold-expiry" in text


# --- failure reporting -----------------------------------------------------------------------


def test_an_unexpected_exception_is_a_failed_scenario(
    local: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(cx: ChaosContext) -> str:
        raise RuntimeError("kaboom")

    def fine(cx: ChaosContext) -> str:
        assert cx.prefix.startswith("chaos-") and cx.seat("x").startswith(cx.prefix)
        return "42 bookings"

    monkeypatch.setitem(chaos.SCENARIOS, "boom", boom)
    monkeypatch.setitem(chaos.SCENARIOS, "fine", fine)
    outcomes, text = run(local, "boom,fine")
    assert [o.status for o in outcomes] == ["failed", "passed"]
    assert "RuntimeError: kaboom" in outcomes[0].detail
    lines = text.splitlines()
    assert lines[0].startswith("chaos local-chaos: ingress http://127.0.0.1:1")
    assert lines[1].startswith("FAIL  boom")
    assert lines[2].startswith("PASS  fine") and "42 bookings" in lines[2]
    assert lines[-1] == "1 passed, 1 failed"


def test_payment_budget_is_shorter_than_the_long_outage() -> None:
    budget = payment_budget_s({})  # the service's defaults
    assert budget == pytest.approx(1.75)
    assert SHORT_OUTAGE_S < budget < LONG_OUTAGE_S


def test_payment_budget_comes_from_what_the_service_is_given(
    local: Environment, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = {names.PAYMENT_ATTEMPTS: "3", names.PAYMENT_BACKOFF_S: "1"}
    assert payment_budget_s(given) == pytest.approx(1.0 + 2.0)
    monkeypatch.setenv(names.PAYMENT_ATTEMPTS, "2")  # inherited by the service process
    environ = service_environ(ChaosContext(local))
    assert environ[names.PAYMENT_ATTEMPTS] == "2"
    assert environ[names.HOLD_SECONDS] == "900"  # the stack's own setting for the service
    assert payment_budget_s(environ) == pytest.approx(0.25)


# --- the malformed-input corpus ----------------------------------------------------------------


def _rejected(probe: Probe) -> bool:
    """Would the service's own parsing refuse this request? (A ValueError counts: the
    service would not accept it either, it would crash on it.)"""
    parts = probe.path.strip("/").split("/")
    service, handler = parts[0], parts[-1]
    key = unquote(parts[1], errors="surrogatepass") if len(parts) == 3 else None
    body = probe.body
    try:
        if service == "Checkout":
            parse_checkout(body)
        elif handler == "reserve":
            user_id_from(body, required=True)
        elif handler in ("confirm", "release"):
            holder_from(body, required=False)
        elif handler == "cleanup":
            value: Any = parse_json(body, allow_empty=True)
            if isinstance(value, dict):
                value = value.get("holdId")
            if value is not None:
                check_id("holdId", value)
        elif body.strip():
            parse_json(body)
        if service == "Ticket":
            check_id("ticketId", key)
    except (TerminalError, ValueError):
        return True
    return False


def test_corpus_covers_every_public_handler_and_every_kind() -> None:
    probes = bad_input_probes("chaos-t:")
    paths = {p.path.rsplit("/", 1)[-1] if "Ticket" in p.path else p.path for p in probes}
    assert {"reserve", "confirm", "release", "get", "cleanup", "/Checkout/process"} <= paths
    assert any(p.path.startswith("/SeatMap/chaos-t/") for p in probes)
    labels = " ".join(p.label for p in probes)
    for kind in (
        "broken JSON",
        "10000-char",
        "lone surrogate",
        "NUL",
        "nested",
        "1 MB",
        "missing",
        "number",
        "text/plain",
    ):
        assert kind in labels, kind
    assert any(b"\\ud800" in p.body for p in probes)  # escaped in JSON, as clients send it
    assert max(len(p.body) for p in probes) >= 1_000_000
    assert any(len(p.path) > 10_000 for p in probes)


def test_corpus_holds_no_valid_request() -> None:
    """Every probe is refused by the service's own parsing, so no probe can book, hold or
    free a seat; only SeatMap reads of bad keys (no validation there) and content-type
    probes (refused by the ingress itself) are exempt."""
    for probe in bad_input_probes("chaos-t:"):
        if probe.tolerated_2xx or probe.content_type != "application/json":
            continue
        assert _rejected(probe), probe.label


def test_fuzz_is_bounded_deterministic_and_never_valid() -> None:
    first = fuzz_probes("chaos-a:", examples=60)
    again = fuzz_probes("chaos-a:", examples=60)
    assert first == again
    assert 20 <= len(first) <= 60
    assert len({p.path for p in first}) >= 5
    for probe in first:
        assert _rejected(probe), (probe.path, probe.body[:100])


def test_describe_shortens_big_inputs() -> None:
    probe = Probe("/Ticket/" + "x" * 10_000 + "/get", b"y" * 2_000_000, "huge")
    text = describe(probe)
    assert len(text) < 400
    assert "(2000000 bytes)" in text and "(10012)" in text


def test_j_escapes_lone_surrogates() -> None:
    assert _j({"userId": "\ud800"}) == b'{"userId": "\\ud800"}'
    assert json.loads(_j("\u0085")) == "\u0085"
