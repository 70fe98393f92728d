"""Tests of the k6 runner (ops/testing/k6.py) and, through the real k6 binary, of the k6 scripts."""

from __future__ import annotations

import copy
import io
import json
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest

from ops.testing import k6
from tests.streams import CtrlCOnProgress

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "loadtest" / "k6"
TOKEN = "test-token-5f2c9a"

# Trimmed from a real summary written by checkout.js (2 VUs, 3s, against a loopback stub).
REAL_SUMMARY: dict[str, Any] = {
    "state": {"isStdOutTTY": False, "isStdErrTTY": False, "testRunDurationMs": 3006.991001},
    "metrics": {
        "outcome_confirmed": {
            "type": "counter",
            "contains": "default",
            "values": {"count": 20, "rate": 6.651167227753204},
        },
        "outcome_sold_out": {
            "type": "counter",
            "contains": "default",
            "values": {"count": 9396, "rate": 3124.718363598455},
        },
        "outcome_declined": {
            "type": "counter",
            "contains": "default",
            "values": {"count": 1188, "rate": 395.0793333285403},
        },
        "outcome_gateway_error": {
            "type": "counter",
            "contains": "default",
            "values": {"count": 1170, "rate": 389.09328282356245},
        },
        "outcome_unexpected": {
            "type": "counter",
            "contains": "default",
            "values": {"count": 240, "rate": 79.81400673303844},
            "thresholds": {"count==0": {"ok": False}},
        },
        "checkout_duration": {
            "type": "trend",
            "contains": "time",
            "values": {
                "p(99)": 1.6226079200000034,
                "min": 0.090694,
                "med": 0.3477675,
                "p(90)": 0.6352540000000001,
                "count": 12014,
                "avg": 0.4069780267188262,
                "max": 6.887434,
                "p(50)": 0.3477675,
                "p(95)": 0.76045275,
            },
        },
        "http_reqs": {
            "type": "counter",
            "contains": "default",
            "values": {"count": 12014, "rate": 3995.3561537113496},
        },
    },
}

CLASSIFICATION = [
    (200, '"Booking Confirmed"', "confirmed"),
    (409, "Ticket already sold", "sold_out"),
    (409, "Ticket is currently reserved", "sold_out"),
    (402, "Payment failed: Payment declined", "declined"),
    (502, "Payment failed: Gateway timeout", "gateway_error"),
    (503, '{"code":503,"message":"Payment failed: Gateway timeout"}', "gateway_error"),
    (503, "Service Unavailable", "unexpected"),
    (502, "Bad Gateway", "unexpected"),
    (500, "Payment failed: Gateway timeout", "unexpected"),
    (400, "ticketId must be a non-empty string", "unexpected"),
    (401, "Unauthorized", "unexpected"),
    (404, "", "unexpected"),
    (0, "", "unexpected"),
]


@pytest.mark.parametrize(("status", "body", "outcome"), CLASSIFICATION)
def test_classify(status: int, body: str, outcome: str) -> None:
    assert k6.classify(status, body) == outcome


def test_js_classify_is_the_twin_of_python(tmp_path: Path) -> None:
    cases = [[status, body] for status, body, _ in CLASSIFICATION] + [[503, None]]
    lib = (SCRIPTS / "lib" / "outcomes.js").as_posix()
    script = tmp_path / "twin.js"
    script.write_text(
        f"import {{ classify }} from '{lib}';\n"
        f"const cases = {json.dumps(cases)};\n"
        "export default function () {\n"
        "  console.log(JSON.stringify(cases.map(([s, b]) => classify(s, b))));\n"
        "}\n",
        encoding="utf-8",
    )
    console = tmp_path / "console.txt"
    argv = [str(k6.k6_binary()), "run", "-q", "--no-summary", "--no-usage-report"]
    argv += [
        "--log-format",
        "raw",
        "--address",
        "",
        "-i",
        "1",
        "-e",
        "NEXUS_BASE_URLS=http://127.0.0.1:1",
    ]
    argv += ["--console-output", str(console), str(script)]
    subprocess.run(argv, check=True, capture_output=True, timeout=30)
    js = json.loads(console.read_text(encoding="utf-8").strip())
    assert js == [outcome for _, _, outcome in CLASSIFICATION] + ["unexpected"]


def test_parse_real_summary() -> None:
    summary = k6.parse_summary(REAL_SUMMARY)
    assert summary.outcomes == {
        "confirmed": 20,
        "sold_out": 9396,
        "declined": 1188,
        "gateway_error": 1170,
        "unexpected": 240,
    }
    assert summary.requests == 12014
    assert summary.duration_s == pytest.approx(3.007)
    assert summary.checkouts_per_s == pytest.approx(12014 / 3.006991001, abs=0.01)
    assert summary.confirmed_per_s == pytest.approx(20 / 3.006991001, abs=0.01)
    assert summary.p50_ms == pytest.approx(0.348)
    assert summary.p95_ms == pytest.approx(0.760)
    assert summary.p99_ms == pytest.approx(1.623)
    assert summary.thresholds_ok is False
    assert list(summary.to_dict()) == [
        "requests",
        "duration_s",
        "checkouts_per_s",
        "confirmed_per_s",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "outcomes",
        "latency_by_outcome",
        "dropped_iterations",
        "thresholds_ok",
        "thresholds",
        "k6_exit_code",
    ]
    assert summary.thresholds == [k6.ThresholdResult("outcome_unexpected", "count==0", ok=False)]
    assert summary.crossed == ["outcome_unexpected count==0"]
    assert summary.dropped_iterations == 0  # a closed-model run has no such metric
    assert summary.latency_by_outcome == {}  # trimmed summary: no per-outcome trends
    json.dumps(summary.to_dict())


def test_parse_missing_counters_are_zero() -> None:
    data = copy.deepcopy(REAL_SUMMARY)
    for name in ("outcome_declined", "outcome_gateway_error", "outcome_unexpected", "http_reqs"):
        del data["metrics"][name]
    summary = k6.parse_summary(data)
    assert summary.outcomes == {
        "confirmed": 20,
        "sold_out": 9396,
        "declined": 0,
        "gateway_error": 0,
        "unexpected": 0,
    }
    assert summary.requests == 20 + 9396  # falls back to the classified answers
    assert summary.thresholds_ok is True


def test_parse_empty_run_and_garbage() -> None:
    empty = k6.parse_summary({"state": {"testRunDurationMs": 0}, "metrics": {}})
    assert empty.checkouts_per_s == 0.0 and empty.confirmed_per_s == 0.0
    assert empty.p99_ms == 0.0
    assert set(empty.outcomes) == set(k6.OUTCOMES)
    with pytest.raises(ValueError):
        k6.parse_summary({"metrics": {}})


def test_build_env_keeps_token_out_of_argv(tmp_path: Path) -> None:
    params = k6.LoadParams(base_urls=("http://a:8080", "http://b:8080"), vus=3, run_id="r1")
    base = {
        "PATH": "/usr/bin",
        "NEXUS_TOKEN": "stale",
        "K6_WEB_DASHBOARD": "true",
        "K6_VUS": "1",
        "K6_NO_THRESHOLDS": "true",
    }
    summary = tmp_path / "s.json"
    env = k6.build_env(params, TOKEN, summary, base)
    assert env["NEXUS_TOKEN"] == TOKEN
    assert env["NEXUS_BASE_URLS"] == "http://a:8080,http://b:8080"
    assert env["NEXUS_VUS"] == "3"
    assert env["NEXUS_RUN_ID"] == "r1"
    assert env["NEXUS_SUMMARY_FILE"] == str(summary)
    assert env["PATH"] == "/usr/bin"
    assert not [name for name in env if name.startswith("K6_")]  # the caller's k6 settings
    argv = k6.build_command(SCRIPTS / "checkout.js")
    assert not any(TOKEN in arg for arg in argv)
    assert argv[1] == "run"
    assert argv[-1].endswith("checkout.js")
    assert base["NEXUS_TOKEN"] == "stale"  # input left alone

    no_token = k6.build_env(params, None, summary, base)
    assert "NEXUS_TOKEN" not in no_token

    report = tmp_path / "report.html"
    with_report = k6.build_env(params, None, summary, {}, report_html=report)
    assert with_report["K6_WEB_DASHBOARD"] == "true"
    assert with_report["K6_WEB_DASHBOARD_PORT"] == "-1"
    assert with_report["K6_WEB_DASHBOARD_EXPORT"] == str(report)


def test_load_params_validation() -> None:
    with pytest.raises(ValueError):
        k6.LoadParams(base_urls=())
    with pytest.raises(ValueError):
        k6.LoadParams(base_urls=("http://a",), mix="mostly")
    with pytest.raises(ValueError):
        k6.LoadParams(base_urls=("http://a",), event="a:b")


def test_new_run_id_is_a_plain_token() -> None:
    run_id = k6.new_run_id()
    assert len(run_id) == 19 and run_id.endswith("Z") and ":" not in run_id
    assert k6.LoadParams(base_urls=("http://a",), run_id=run_id).run_id == run_id


def test_render_table() -> None:
    table = k6.render_table(k6.parse_summary(REAL_SUMMARY))
    for figure in ("3995.4", "0.3", "0.8", "1.6", "9396", "1188", "1170", "240", "FAILED", "ok"):
        assert figure in table
    for outcome in k6.OUTCOMES:
        assert outcome in table
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1  # aligned


def test_k6_binary_runs() -> None:
    binary = k6.k6_binary()
    assert binary.is_file()
    result = subprocess.run(
        [str(binary), "version"], capture_output=True, text=True, check=True, timeout=30
    )
    assert "k6 v1." in result.stdout


def test_k6_failed_without_summary(tmp_path: Path) -> None:
    script = tmp_path / "broken.js"
    script.write_text("throw new Error('broken on purpose');\n", encoding="utf-8")
    params = k6.LoadParams(base_urls=("http://127.0.0.1:1",))
    with pytest.raises(k6.K6Failed) as info:
        k6.run_k6(script, params, None, tmp_path / "s.json", out=io.StringIO())
    assert info.value.exit_code not in (0, k6.THRESHOLDS_FAILED_EXIT)


class _Stub:
    """Fake ingress: answers checkouts like the contract, tallying each answer's outcome."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sold: set[str] = set()
        self.calls = 0
        self.tally = dict.fromkeys(k6.OUTCOMES, 0)
        self.per_port: dict[int, int] = {}

    def answer(self, port: int, auth: str | None, payload: dict[str, Any]) -> tuple[int, str]:
        with self.lock:
            self.calls += 1
            self.per_port[port] = self.per_port.get(port, 0) + 1
            if auth != f"Bearer {TOKEN}":
                status, body = 401, "missing bearer token"
            elif self.calls % 25 == 0:
                status, body = 502, "Bad Gateway (proxy)"  # 502 without the gateway message
            elif payload["paymentMethodId"] == "card_decline":
                status, body = 402, '{"message":"Payment failed: Payment declined"}'
            elif payload["paymentMethodId"] == "card_error":
                status, body = 503, '{"message":"Payment failed: Gateway timeout"}'
            elif payload["ticketId"] in self.sold:
                status, body = 409, '{"message":"Ticket already sold"}'
            else:
                self.sold.add(payload["ticketId"])
                status, body = 200, '"Booking Confirmed"'
            self.tally[k6.classify(status, body)] += 1
            return status, body


@pytest.fixture
def stub_urls() -> Iterator[tuple[_Stub, list[ThreadingHTTPServer]]]:
    stub = _Stub()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            payload = json.loads(self.rfile.read(length))
            assert self.path == "/Checkout/process"
            port = cast(ThreadingHTTPServer, self.server).server_port
            status, body = stub.answer(port, self.headers.get("Authorization"), payload)
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        yield stub, servers
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_checkout_script_against_stub(
    tmp_path: Path, stub_urls: tuple[_Stub, list[ThreadingHTTPServer]]
) -> None:
    stub, servers = stub_urls
    urls = tuple(f"http://127.0.0.1:{s.server_port}" for s in servers)
    params = k6.LoadParams(base_urls=urls, vus=2, duration="2s", ramp="0s", seats=20)
    out = io.StringIO()
    summary = k6.run_k6(SCRIPTS / "checkout.js", params, TOKEN, tmp_path / "summary.json", out=out)
    assert all(count > 0 for count in summary.outcomes.values()), summary.outcomes
    assert summary.outcomes == stub.tally
    assert summary.requests == stub.calls
    assert len(stub.per_port) == 2  # round-robin over both base URLs
    assert summary.outcomes["confirmed"] <= 20  # one sale per seat
    assert summary.thresholds_ok is False  # the stub's bare 502s are unexpected
    assert 0 < summary.p50_ms <= summary.p95_ms <= summary.p99_ms
    assert summary.checkouts_per_s > 0
    text = out.getvalue()
    assert "nexus summary" in text
    assert "unexpected checkout answer: status=502" in text
    assert TOKEN not in text
    assert TOKEN not in (tmp_path / "summary.json").read_text(encoding="utf-8")


def test_ctrl_c_stops_k6_and_still_returns_its_summary(
    tmp_path: Path, stub_urls: tuple[_Stub, list[ThreadingHTTPServer]]
) -> None:
    stub, servers = stub_urls
    params = k6.LoadParams(
        base_urls=(f"http://127.0.0.1:{servers[0].server_port}",), vus=2, duration="60s", ramp="0s"
    )
    out = CtrlCOnProgress(nth=3)
    summary = k6.run_k6(SCRIPTS / "checkout.js", params, TOKEN, tmp_path / "s.json", out=out)
    assert out.pressed
    assert summary.interrupted and summary.exit_code == k6.INTERRUPTED_EXIT
    assert summary.duration_s < 30  # stopped long before its 60 s
    assert 0 < summary.requests <= stub.calls
    assert k6.render_table(summary).splitlines()[-1].split() == [
        "k6",
        "exit",
        "105",
        "(interrupted)",
    ]
    assert "interrupted: k6 stops and writes its summary" in out.getvalue()


def test_a_run_that_aborts_itself_keeps_its_summary_and_exit_code(tmp_path: Path) -> None:
    script = tmp_path / "aborts.js"
    script.write_text(
        "import exec from 'k6/execution';\n"
        f"export {{ handleSummary }} from '{SCRIPTS / 'lib' / 'outcomes.js'}';\n"
        "export default function () { exec.test.abort('stop here'); }\n",
        encoding="utf-8",
    )
    params = k6.LoadParams(base_urls=("http://127.0.0.1:1",), vus=1, duration="30s")
    summary = k6.run_k6(script, params, None, tmp_path / "s.json", out=io.StringIO())
    assert summary.exit_code == 108 and not summary.interrupted
    assert summary.exit_text == "exit 108 (script aborted)"
    assert summary.to_dict()["k6_exit_code"] == 108


# --- open model, thresholds, outputs, the k6 executable ----------------------------


def inspect_options(script: str, env: dict[str, str]) -> dict[str, Any]:
    """The options a script builds from its environment, as k6 itself evaluates them."""
    argv = [str(k6.k6_binary()), "inspect", "--include-system-env-vars", str(SCRIPTS / script)]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=True)
    options: dict[str, Any] = json.loads(proc.stdout)
    return options


def k6_env(tmp_path: Path, **params: Any) -> dict[str, str]:
    load = k6.LoadParams(base_urls=("http://127.0.0.1:1",), run_id="r1", **params)
    return k6.build_env(load, None, tmp_path / "s.json", {"PATH": "/usr/bin:/bin"})


def test_rate_builds_an_arrival_rate_scenario_with_vus_as_its_ceiling(tmp_path: Path) -> None:
    env = k6_env(tmp_path, rate=150, vus=60, ramp="0s", duration="20s")
    assert env["NEXUS_RATE"] == "150" and env["NEXUS_VUS"] == "60"
    (scenario,) = inspect_options("checkout.js", env)["scenarios"].values()
    assert scenario["executor"] == "constant-arrival-rate"
    assert (scenario["rate"], scenario["timeUnit"], scenario["duration"]) == (150, "1s", "20s")
    assert scenario["preAllocatedVUs"] == scenario["maxVUs"] == 60

    ramped = k6_env(tmp_path, rate=40, vus=8, ramp="3s", duration="10s")
    (scenario,) = inspect_options("checkout.js", ramped)["scenarios"].values()
    assert scenario["executor"] == "ramping-arrival-rate"
    assert [(s["duration"], s["target"]) for s in scenario["stages"]] == [
        ("3s", 40),
        ("10s", 40),
        ("3s", 0),
    ]
    assert scenario["preAllocatedVUs"] == scenario["maxVUs"] == 8


def test_without_a_rate_the_load_stays_a_closed_model(tmp_path: Path) -> None:
    env = k6_env(tmp_path, vus=7, ramp="0s")
    assert "NEXUS_RATE" not in env
    (scenario,) = inspect_options("checkout.js", env)["scenarios"].values()
    assert scenario["executor"] == "ramping-vus" and scenario["startVUs"] == 7


def test_the_flash_sale_script_needs_a_rate_and_guards_against_overselling(
    tmp_path: Path,
) -> None:
    env = k6_env(tmp_path, rate=150, vus=150, ramp="0s", duration="20s", seats=200)
    options = inspect_options("flash-sale.js", env)
    (scenario,) = options["scenarios"].values()
    assert scenario["executor"] == "constant-arrival-rate" and scenario["rate"] == 150
    assert options["thresholds"] == {
        "outcome_unexpected": ["count==0"],
        "outcome_confirmed": ["count<=200"],
    }
    no_rate = k6_env(tmp_path, seats=200)
    argv = [str(k6.k6_binary()), "inspect", "--include-system-env-vars"]
    proc = subprocess.run(
        [*argv, str(SCRIPTS / "flash-sale.js")], env=no_rate, capture_output=True, text=True
    )
    assert proc.returncode != 0 and "NEXUS_RATE is required" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("text", "metric", "expression"),
    [
        ("p(99)<250", "checkout_duration", "p(99)<250"),
        (" p(99) < 250 ", "checkout_duration", "p(99)<250"),
        ("med<=80.5", "checkout_duration", "med<=80.5"),
        ("checkout_duration_sold_out:p(99)<100", "checkout_duration_sold_out", "p(99)<100"),
        (
            "checkout_duration{outcome:confirmed}:p(95)<400",
            "checkout_duration{outcome:confirmed}",
            "p(95)<400",
        ),
        ("dropped_iterations:count==0", "dropped_iterations", "count==0"),
        ("http_req_failed:rate<0.01", "http_req_failed", "rate<0.01"),
    ],
)
def test_parse_threshold(text: str, metric: str, expression: str) -> None:
    assert k6.parse_threshold(text) == k6.Threshold(metric, expression)


@pytest.mark.parametrize(
    "text", ["", "p99<250", "p(99)", "<250", "p(99)<fast", "bad metric:p(99)<1", "p(99)<250;x"]
)
def test_a_bad_threshold_is_refused_naming_it(text: str) -> None:
    with pytest.raises(ValueError, match="bad threshold") as info:
        k6.parse_threshold(text)
    assert repr(text) in str(info.value)


def test_user_thresholds_are_added_to_the_scripts_own(tmp_path: Path) -> None:
    thresholds = tuple(
        k6.parse_threshold(t)
        for t in (
            "p(99)<250",
            "p(50)<100",
            "outcome_unexpected:count==0",
            "outcome_declined:count<5",
        )
    )
    env = k6_env(tmp_path, thresholds=thresholds)
    assert json.loads(env["NEXUS_THRESHOLDS"]) == {
        "checkout_duration": ["p(99)<250", "p(50)<100"],
        "outcome_unexpected": ["count==0"],
        "outcome_declined": ["count<5"],
    }
    assert inspect_options("checkout.js", env)["thresholds"] == {
        "outcome_unexpected": ["count==0"],  # the default, not doubled
        "checkout_duration": ["p(99)<250", "p(50)<100"],
        "outcome_declined": ["count<5"],
    }
    assert "NEXUS_THRESHOLDS" not in k6_env(tmp_path)


def test_command_tags_every_sample_with_the_run_id_and_passes_outputs_on() -> None:
    argv = k6.build_command(
        SCRIPTS / "checkout.js",
        Path("/opt/k6"),
        run_id="20260101T000000000Z",
        outputs=["json=run.json", "csv=/tmp/run.csv"],
    )
    assert argv[:2] == ["/opt/k6", "run"]
    assert argv[argv.index("--tag") + 1] == "testid=20260101T000000000Z"
    outs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--out"]
    assert outs == ["json=run.json", "csv=/tmp/run.csv"]
    assert argv[-1].endswith("checkout.js")


@pytest.mark.parametrize("spec", ["", "=run.json", "json=", "JSON=x", "json run.json"])
def test_a_bad_output_is_refused_naming_it(spec: str) -> None:
    with pytest.raises(ValueError, match="bad k6 output") as info:
        k6.parse_output(spec)
    assert repr(spec) in str(info.value)


def test_a_rate_and_run_id_are_checked() -> None:
    with pytest.raises(ValueError, match="rate must be a positive"):
        k6.LoadParams(base_urls=("http://a",), rate=0)
    with pytest.raises(ValueError, match="run_id may hold only"):
        k6.LoadParams(base_urls=("http://a",), run_id="a b")


FAKE_K6 = """#!/bin/sh
# Stands in for k6: records its argv, writes a summary where the scripts would.
printf '%s\\n' "$@" > "$(dirname "$0")/argv.txt"
printf '%s' '{"state": {"testRunDurationMs": 1000}, "metrics": {"outcome_confirmed":
  {"values": {"count": 3}}, "dropped_iterations": {"values": {"count": 4}}}}' \\
  > "$NEXUS_SUMMARY_FILE"
"""


def fake_k6(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "my-k6"
    path.parent.mkdir()
    path.write_text(FAKE_K6)
    path.chmod(0o755)
    return path


def test_k6_binary_prefers_the_flag_then_nexus_k6_then_the_wheel(tmp_path: Path) -> None:
    mine = fake_k6(tmp_path)
    wheel = k6.k6_binary(environ={})
    assert wheel.name == "k6" and wheel != mine
    assert k6.k6_binary(environ={k6.K6_ENV: str(mine)}) == mine
    assert k6.k6_binary(str(mine), environ={k6.K6_ENV: "/nowhere/k6"}) == mine
    assert k6.k6_binary("sh", environ={}) == Path(shutil.which("sh") or "")


@pytest.mark.parametrize(
    ("explicit", "environ", "says"),
    [
        ("/nowhere/k6", {}, "k6 '/nowhere/k6' from --k6 does not exist"),
        (None, {"NEXUS_K6": "/nowhere/k6"}, "k6 '/nowhere/k6' from NEXUS_K6 does not exist"),
        (None, {"NEXUS_K6": ""}, "NEXUS_K6 is empty"),
        ("no-such-k6-here", {}, "k6 'no-such-k6-here' from --k6 is not on PATH"),
    ],
)
def test_a_k6_the_user_names_must_exist(
    explicit: str | None, environ: dict[str, str], says: str
) -> None:
    with pytest.raises(k6.K6NotFound, match=re.escape(says)):
        k6.k6_binary(explicit, environ=environ)


def test_a_k6_the_user_names_that_is_not_executable_is_refused(tmp_path: Path) -> None:
    plain = tmp_path / "k6"
    plain.write_text("")
    with pytest.raises(k6.K6NotFound, match="is not an executable file"):
        k6.k6_binary(str(plain))


def test_run_k6_runs_the_chosen_k6_with_tag_and_outputs(tmp_path: Path) -> None:
    mine = fake_k6(tmp_path)
    params = k6.LoadParams(base_urls=("http://127.0.0.1:1",), rate=5)
    summary = k6.run_k6(
        SCRIPTS / "checkout.js",
        params,
        None,
        tmp_path / "s.json",
        out=io.StringIO(),
        binary=mine,
        outputs=["csv=run.csv"],
    )
    assert summary.outcomes["confirmed"] == 3 and summary.dropped_iterations == 4
    argv = (mine.parent / "argv.txt").read_text().splitlines()
    assert argv[0] == "run" and argv[-1] == str((SCRIPTS / "checkout.js").resolve())
    tag = argv[argv.index("--tag") + 1]
    assert re.fullmatch(r"testid=\d{8}T\d{9}Z", tag)  # a run without an id gets one
    assert argv[argv.index("--out") + 1] == "csv=run.csv"


def test_a_real_open_model_run_tags_every_request_and_writes_the_outputs(
    tmp_path: Path, stub_urls: tuple[_Stub, list[ThreadingHTTPServer]]
) -> None:
    stub, servers = stub_urls
    params = k6.LoadParams(
        base_urls=(f"http://127.0.0.1:{servers[0].server_port}",),
        vus=5,
        rate=20,
        duration="2s",
        ramp="0s",
        run_id="tagged-run-1",
    )
    points = tmp_path / "points.json"
    rows = tmp_path / "points.csv"
    summary = k6.run_k6(
        SCRIPTS / "checkout.js",
        params,
        TOKEN,
        tmp_path / "s.json",
        out=io.StringIO(),
        outputs=[f"json={points}", f"csv={rows}"],
    )
    # 20 arrivals/s for 2 s, answered in well under a second each: about 40 requests
    assert 30 <= summary.requests <= 45 and summary.dropped_iterations == 0
    samples = [json.loads(line) for line in points.read_text().splitlines()]
    requests = [s for s in samples if s["type"] == "Point" and s["metric"] == "http_reqs"]
    assert len(requests) == summary.requests == stub.calls
    assert {r["data"]["tags"]["testid"] for r in requests} == {"tagged-run-1"}
    assert rows.read_text().splitlines()[0].startswith("metric_name,timestamp,metric_value")
    assert TOKEN not in points.read_text() and TOKEN not in rows.read_text()


def test_a_crossed_threshold_fails_a_real_run_and_is_named(
    tmp_path: Path, stub_urls: tuple[_Stub, list[ThreadingHTTPServer]]
) -> None:
    _, servers = stub_urls
    params = k6.LoadParams(
        base_urls=(f"http://127.0.0.1:{servers[0].server_port}",),
        vus=2,
        rate=10,
        duration="1s",
        ramp="0s",
        thresholds=(k6.parse_threshold("p(99)<0.001"), k6.parse_threshold("p(99)<60000")),
    )
    out = io.StringIO()
    summary = k6.run_k6(SCRIPTS / "checkout.js", params, TOKEN, tmp_path / "s.json", out=out)
    assert summary.exit_code == k6.THRESHOLDS_FAILED_EXIT and not summary.thresholds_ok
    assert "checkout_duration p(99)<0.001" in summary.crossed
    assert "checkout_duration p(99)<60000" not in summary.crossed
    assert "threshold CROSSED checkout_duration p(99)<0.001" in out.getvalue()
    table = k6.render_table(summary)
    assert "threshold checkout_duration p(99)<0.001" in table and "CROSSED" in table
