"""`invoke load` and `invoke bench`: k6 runs against an environment, each followed by
the audit of what it booked."""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ops import k6
from ops.audit import AuditReport, audit
from ops.environments import Environment
from ops.errors import NexusError

SCRIPTS = Path(__file__).resolve().parent.parent / "loadtest" / "k6"


def script_path(name: str) -> Path:
    """`checkout`, `hot-seat`, `noop` or a path to a .js file."""
    path = Path(name) if name.endswith(".js") else SCRIPTS / f"{name}.js"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SCRIPTS.glob("*.js")))
        raise NexusError(f"no k6 script {name!r} (known: {known})")
    return path


def ingress_urls(env: Environment) -> tuple[str, ...]:
    """Every ingress k6 should spread requests over (one, or a cluster's nodes)."""
    return (env.ingress.url,)


@dataclass
class LoadResult:
    summary: k6.LoadSummary
    audit: AuditReport
    run_id: str

    @property
    def ok(self) -> bool:
        return (
            self.summary.thresholds_ok and self.audit.ok and not self.summary.outcomes["unexpected"]
        )

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary.to_dict(), "run_id": self.run_id, "audit": self.audit.to_dict()}


def run_load(
    env: Environment,
    *,
    vus: int,
    duration: str,
    script: str = "checkout",
    seats: int = 100,
    ramp: str = "2s",
    mix: str = "default",
    seat_mode: str = "random",
    report_html: Path | None = None,
    out: TextIO | None = None,
) -> LoadResult:
    """One k6 run through the environment's ingress, then the audit of its seats."""
    stream = out or sys.stdout
    run_id = k6.new_run_id()
    event = "load" if script != "noop" else "bench"
    try:
        params = k6.LoadParams(
            base_urls=ingress_urls(env),
            vus=vus,
            duration=duration,
            ramp=ramp,
            seats=seats,
            run_id=run_id,
            mix=mix,
            seat_mode=seat_mode,
            event=event,
        )
    except ValueError as exc:
        raise NexusError(f"bad load parameters: {exc}") from None
    summary_file = env.state_dir / "load" / f"k6-summary-{run_id}.json"
    print(
        f"load {env.name}: {script} with {vus} VUs for {duration} on {', '.join(params.base_urls)}",
        file=stream,
        flush=True,
    )
    try:
        summary = k6.run_k6(
            script_path(script), params, env.token, summary_file, report_html, out=stream
        )
    except (k6.K6Failed, k6.K6NotFound) as exc:
        raise NexusError(f"k6 failed: {exc}") from None
    prefix = f"{event}-{run_id}:"
    report = audit(env, prefix=prefix) if script != "noop" else AuditReport(notes=["no-op load"])
    confirmed = summary.outcomes["confirmed"]
    if script != "noop" and report.checked.get("sold") != confirmed:
        report.violations.append(
            f"k6 saw {confirmed} confirmed bookings but {report.checked.get('sold')} seats"
            f" of run {run_id} are SOLD"
        )
    return LoadResult(summary, report, run_id)


def print_result(result: LoadResult, out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    print(k6.render_table(result.summary), file=stream)
    print("\n".join(result.audit.lines()), file=stream, flush=True)


def write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


# --- CPU accounting for the benchmark --------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process and its reaped children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    ticks = sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure_cpu(pids: dict[str, int], action: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """Run `action`; CPU seconds each process spent meanwhile, plus k6 (our children)."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    value = action()
    wall = time.monotonic() - started
    after_kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    split = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    split["k6"] = (after_kids.ru_utime + after_kids.ru_stime) - (kids.ru_utime + kids.ru_stime)
    split["wall"] = wall
    return value, split
