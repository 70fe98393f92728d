"""The check runner shared by `invoke test-all`, `invoke chaos` and the cluster tests: a
check is a name and a function returning its figures; the runner prints a line per check
(PASS, FAIL or SKIP), a closing `N passed, N failed` line, and writes JUnit XML."""

from __future__ import annotations

import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import httpx

from ops.base.errors import CheckFailed, NexusError, Skip

__all__ = [
    "Check",
    "CheckFailed",
    "Outcome",
    "Skip",
    "closing_line",
    "expect",
    "run_checks",
    "write_junit",
]

Check = tuple[str, Callable[[], str]]


@dataclass
class Outcome:
    """How one check ended, with its figures or its reason, and how long it took."""

    name: str
    status: str  # passed | failed | skipped
    detail: str
    seconds: float


def expect(condition: bool, message: str) -> None:
    """Fail the check with `message` unless `condition` holds."""
    if not condition:
        raise CheckFailed(message)


def run_checks(checks: list[Check], out: TextIO | None = None) -> list[Outcome]:
    """Run each check, print a line per check and the closing `N passed, N failed` line."""
    stream = out or sys.stdout
    outcomes: list[Outcome] = []
    for name, fn in checks:
        started = time.monotonic()
        try:
            outcome = Outcome(name, "passed", fn(), 0.0)
        except Skip as exc:
            outcome = Outcome(name, "skipped", str(exc), 0.0)
        except (NexusError, httpx.HTTPError, ValueError, KeyError) as exc:
            outcome = Outcome(name, "failed", f"{type(exc).__name__}: {exc}", 0.0)
        outcome.seconds = time.monotonic() - started
        outcomes.append(outcome)
        label = {"passed": "PASS", "failed": "FAIL", "skipped": "SKIP"}[outcome.status]
        print(
            f"{label}  {name:<20} {outcome.detail}  ({outcome.seconds:.2f}s)",
            file=stream,
            flush=True,
        )
    print(closing_line(outcomes), file=stream, flush=True)
    return outcomes


def closing_line(outcomes: list[Outcome]) -> str:
    """`N passed, N failed` (and `, N skipped` when there are any)."""
    passed = sum(o.status == "passed" for o in outcomes)
    failed = sum(o.status == "failed" for o in outcomes)
    skipped = sum(o.status == "skipped" for o in outcomes)
    return f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else "")


def write_junit(outcomes: list[Outcome], path: Path, suite: str) -> None:
    """JUnit XML, one testcase per check."""
    root = ET.Element(
        "testsuite",
        name=suite,
        tests=str(len(outcomes)),
        failures=str(sum(o.status == "failed" for o in outcomes)),
        skipped=str(sum(o.status == "skipped" for o in outcomes)),
        time=f"{sum(o.seconds for o in outcomes):.3f}",
    )
    for o in outcomes:
        case = ET.SubElement(
            root, "testcase", classname=suite, name=o.name, time=f"{o.seconds:.3f}"
        )
        if o.status == "failed":
            ET.SubElement(case, "failure", message=o.detail[:500]).text = o.detail
        elif o.status == "skipped":
            ET.SubElement(case, "skipped", message=o.detail)
        else:
            ET.SubElement(case, "system-out").text = o.detail
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=True)
