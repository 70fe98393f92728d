"""One k6 run through an environment's ingress (`drive`), the scripts it can run, and the
mock gateway's latency around it."""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from ops.base.environments import Environment
from ops.base.errors import NexusError
from ops.clients.admin import GatewayClient
from ops.testing import k6
from ops.testing.host_cpu import host_cpu_seconds, host_share_pct

SCRIPTS = Path(__file__).resolve().parents[2] / "loadtest" / "k6"
# Scripts against the bench-only service: no seats of their own to audit.
BENCH_SCRIPTS = ("noop", "saga")
FLASH_SALE = "flash-sale"
# Scripts that need an arrival rate (--rate): the open model is what they measure.
RATE_SCRIPTS = (FLASH_SALE,)
# Scripts with a fixed executor of their own, which an arrival rate would not change.
NO_RATE_SCRIPTS = ("hot-seat", *BENCH_SCRIPTS)


def script_path(name: str) -> Path:
    """`checkout`, `hot-seat`, `noop` or a path to a .js file."""
    path = Path(name) if name.endswith(".js") else SCRIPTS / f"{name}.js"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in SCRIPTS.glob("*.js")))
        raise NexusError(f"no k6 script {name!r} (known: {known})")
    return path


@dataclass
class K6Run:
    """What one k6 run reports, and the prefix of the seats it booked."""

    script: str
    summary: k6.LoadSummary
    run_id: str
    prefix: str
    seats: int = 0
    rate: int | None = None
    duration: str = ""
    host_steal_pct: float = 0.0  # of the host's CPU time while k6 ran
    samples_csv: Path | None = None  # k6's samples (flash sale), read once, then removed


def drive(
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
    rate: int | None = None,
    thresholds: Sequence[str] = (),
    k6_path: str | None = None,
    k6_outputs: Sequence[str] = (),
    run_id: str | None = None,
    samples: bool = False,
) -> K6Run:
    """One k6 run through the environment's ingress (no audit). `rate` makes it an open
    model (arrivals per second, `vus` the most in flight); `thresholds` (k6 syntax) are
    checked by k6; `k6_path` picks the k6 (else $NEXUS_K6, else the wheel's);
    `k6_outputs` are passed to k6 as `--out`; `run_id` names the seats of an earlier run
    (the bench's refusal phase asks for seats it sold), else the run gets a new one;
    `samples` has k6 write every answer to a CSV file (always so for a flash sale)."""
    stream = out or sys.stdout
    run_id = run_id or k6.new_run_id()
    event = "bench" if script in BENCH_SCRIPTS else "sale" if script == FLASH_SALE else "load"
    if script in RATE_SCRIPTS and rate is None:
        raise NexusError(f"the {script} script needs --rate (buyers arriving per second)")
    if script in NO_RATE_SCRIPTS and rate is not None:
        raise NexusError(f"the {script} script runs its own fixed users: --rate does not apply")
    try:
        binary = k6.k6_binary(k6_path)
        outputs = [k6.parse_output(spec) for spec in k6_outputs]
        params = k6.LoadParams(
            base_urls=env.ingress_urls,
            vus=vus,
            duration=duration,
            ramp=ramp,
            seats=seats,
            run_id=run_id,
            mix=mix,
            seat_mode=seat_mode,
            event=event,
            rate=rate,
            thresholds=tuple(k6.parse_threshold(text) for text in thresholds),
            samples_csv=sale_samples_file(env, run_id) if script == FLASH_SALE or samples else None,
        )
    except ValueError as exc:
        raise NexusError(f"bad load parameters: {exc}") from None
    except k6.K6NotFound as exc:
        raise NexusError(str(exc)) from None
    summary_file = env.state_dir / "load" / f"k6-summary-{run_id}.json"
    model = f"{vus} VUs" if rate is None else f"{rate} arrivals/s (at most {vus} VUs)"
    print(
        f"load {env.name}: {script} with {model} for {duration} on"
        f" {', '.join(params.base_urls)} (k6 {binary}, testid={run_id})",
        file=stream,
        flush=True,
    )
    _, stolen_before = host_cpu_seconds()
    started = time.monotonic()
    try:
        summary = k6.run_k6(
            script_path(script),
            params,
            env.token,
            summary_file,
            report_html,
            out=stream,
            binary=binary,
            outputs=outputs,
        )
    except (k6.K6Failed, k6.K6NotFound) as exc:
        raise NexusError(f"k6 failed: {exc}") from None
    stolen = host_cpu_seconds()[1] - stolen_before
    return K6Run(
        script,
        summary,
        run_id,
        prefix=f"{event}-{run_id}:",
        seats=seats,
        rate=rate,
        duration=duration,
        host_steal_pct=host_share_pct(stolen, time.monotonic() - started),
        samples_csv=params.samples_csv,
    )


@contextmanager
def gateway_latency(env: Environment, latency_ms: float | None) -> Iterator[None]:
    """The mock gateway answering each charge after `latency_ms` while the block runs, and
    its own latency back afterwards, even on failure. None leaves the gateway alone."""
    if latency_ms is None:
        yield
        return
    if not (math.isfinite(latency_ms) and latency_ms >= 0):
        raise NexusError(f"gateway latency must be a number of milliseconds >= 0, not {latency_ms}")
    if env.gateway_mode != "mock":
        raise NexusError(
            f"a gateway latency needs the mock gateway; {env.name}'s gateway is {env.gateway_mode}"
        )
    gateway = GatewayClient(env.gateway.url, timeout=5.0)
    try:
        before = float(gateway.config()["latency_ms"])
        gateway.configure(latency_ms=latency_ms)
        try:
            yield
        finally:
            gateway.configure(latency_ms=before)
    finally:
        gateway.close()


def sale_samples_file(env: Environment, run_id: str) -> Path:
    """Where k6 writes a flash sale's samples (CSV), read once by its figures."""
    return env.state_dir / "load" / f"k6-samples-{run_id}.csv"


def write_json(data: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
