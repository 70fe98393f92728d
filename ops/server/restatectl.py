"""Running restatectl against a set of node addresses: its output without colours, an
error that keeps its message, and the rows of `restatectl sql --json`. Every caller
(snapshots, the partition stall check, the cluster features, the leader query) runs it
through here."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from ops.base.errors import NexusError, RuntimeUnavailable

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class RestatectlError(NexusError):
    """restatectl answered with an error; its message is kept (without colours)."""


def run_restatectl(ctl: Path, addresses: list[str], *args: str, timeout: float = 30.0) -> str:
    """`restatectl -s ADDRESSES -y ARGS`: stdout, RestatectlError when it exits non-zero,
    RuntimeUnavailable when it does not run or answer in `timeout`."""
    argv = [str(ctl), "-s", ",".join(addresses), "-y", *args]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeUnavailable(f"restatectl {' '.join(args)} did not answer: {exc}") from None
    if proc.returncode != 0:
        message = _ANSI.sub("", proc.stderr or proc.stdout).strip()
        raise RestatectlError(f"restatectl {' '.join(args)}: {message}")
    return _ANSI.sub("", proc.stdout)


def sql_rows(
    ctl: Path, addresses: list[str], query: str, *, timeout: float = 30.0
) -> list[dict[str, Any]]:
    """Rows of one query over the cluster's tables (`restatectl sql --json`); none when
    it prints no JSON array."""
    out = run_restatectl(ctl, addresses, "sql", "--json", query, timeout=timeout)
    start = out.find("[")
    try:
        rows = json.loads(out[start : out.rfind("]") + 1]) if start >= 0 else []
    except ValueError:
        return []
    return [r for r in rows if isinstance(r, dict)]
