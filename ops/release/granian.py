"""Serving an ASGI app (the service, the mock gateway) with granian as a managed process."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from ops.base.environments import Endpoint
from ops.base.processes import ProcessSpec, http_ready

# Granian: HTTP/1.1 and HTTP/2 (h2c, which restate-server speaks) in Rust, one Python
# worker on uvloop. It cost 18% less CPU per checkout than hypercorn's pure-Python h2, and
# it never recycles connections (hypercorn dropped every 1000 requests, with all the
# invocations in flight on them). Restate opens a new connection past 128 streams.
GRANIAN = (
    "--interface", "asginl",  # no ASGI lifespan: the Restate app has none
    "--http", "auto",
    "--workers", "1",
    "--loop", "uvloop",
    "--http2-max-concurrent-streams", "1000",
    "--workers-kill-timeout", "1",
    "--log-level", "warning",
)  # fmt: skip


def source_digest(path: Path) -> str:
    """A digest of the sources (or config file) a process runs: a change means a restart."""
    files = sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else []
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path.parent).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


def _bind(endpoint: Endpoint) -> list[str]:
    return ["--host", endpoint.host, "--port", str(endpoint.port)]


def asgi_spec(
    name: str,
    app: str,
    endpoint: Endpoint,
    root: Path,
    *,
    sources: Path | None = None,
    inputs: str = "",
    env: dict[str, str] | None = None,
    python: str | None = None,
) -> ProcessSpec:
    """An ASGI `app` served by granian at `endpoint` from `root`; new `sources` (or other
    `inputs`) restart it. `python` is the interpreter (default: the toolkit's own, which
    only the toolkit's helpers such as the mock gateway use).

    Granian is a supervisor with one worker child; both live in the process group that
    the toolkit signals. Asked to stop, it can wait on Restate's open HTTP/2 streams, so
    it gets 3 s before SIGKILL: safe, since Restate replays whatever was in flight."""
    return ProcessSpec(
        name=name,
        argv=[python or sys.executable, "-m", "granian", *GRANIAN, *_bind(endpoint), app],
        cwd=root,
        ports=[(endpoint.host, endpoint.port)],
        ready=http_ready(f"{endpoint.url}/health"),
        env=env or {},
        inputs=inputs or (source_digest(sources) if sources else ""),
        stop_timeout=3.0,
    )
