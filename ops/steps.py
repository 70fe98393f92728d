"""Ansible-style steps: each reads state, acts only on a difference, and reports
`ok`, `changed`, `failed` or `skipped`; a play ends with a recap line."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TextIO

from ops.errors import NexusError


class Status(StrEnum):
    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass
class Result:
    """What one step found or did. `diff` holds before/after lines, never secrets."""

    status: Status
    message: str
    diff: Sequence[str] = ()
    step: str = ""
    seconds: float = 0.0

    @classmethod
    def ok(cls, message: str) -> Result:
        return cls(Status.OK, message)

    @classmethod
    def changed(cls, message: str, diff: Sequence[str] = ()) -> Result:
        return cls(Status.CHANGED, message, diff)

    @classmethod
    def skipped(cls, message: str) -> Result:
        return cls(Status.SKIPPED, message)


@dataclass
class Context:
    """What every step is told: check mode, whether diffs are wanted, and (in check
    mode) which earlier steps would have changed something, for steps whose answer
    depends on those changes."""

    check: bool = False
    show_diff: bool = False
    would_change: list[str] = field(default_factory=list)


StepFn = Callable[[Context], Result]

_COLORS = {Status.OK: "32", Status.CHANGED: "33", Status.FAILED: "31", Status.SKIPPED: "36"}


@dataclass
class Play:
    """Runs steps in order, prints a line per step, stops at the first failure."""

    title: str
    ctx: Context = field(default_factory=Context)
    out: TextIO = field(default_factory=lambda: sys.stdout)
    results: list[Result] = field(default_factory=list)

    def __post_init__(self) -> None:
        mode = " (check mode: nothing will be changed)" if self.ctx.check else ""
        self._print(f"PLAY [{self.title}]{mode}")

    @property
    def failed(self) -> bool:
        return any(r.status is Status.FAILED for r in self.results)

    def run(self, name: str, fn: StepFn) -> Result:
        """Run one step unless an earlier one failed."""
        started = time.monotonic()
        if self.failed:
            result = Result.skipped("an earlier step failed")
        else:
            try:
                result = fn(self.ctx)
            except NexusError as exc:
                result = Result(Status.FAILED, str(exc))
        result.step = name
        result.seconds = time.monotonic() - started
        if self.ctx.check and result.status is Status.CHANGED:
            self.ctx.would_change.append(name)
        self.results.append(result)
        self._report(result)
        return result

    def _report(self, result: Result) -> None:
        label = result.status.value
        if self.ctx.check and result.status is Status.CHANGED:
            label = "changed (would)"
        first, *rest = result.message.splitlines() or [""]
        took = f"  ({result.seconds:.1f}s)" if result.seconds >= 0.5 else ""
        self._print(f"{self._paint(result.status, f'{label:<16}')}{result.step:<14} {first}{took}")
        for line in rest:
            self._print(f"{'':<31}{line}")
        if self.ctx.show_diff:
            for line in result.diff:
                self._print(f"{'':<31}{line}")

    def counts(self) -> dict[str, int]:
        return {s.value: sum(r.status is s for r in self.results) for s in Status}

    def recap(self) -> str:
        """The closing line: `RECAP [title] ok=N changed=N failed=N skipped=N`."""
        c = self.counts()
        line = (
            f"RECAP [{self.title}] ok={c['ok']} changed={c['changed']}"
            f" failed={c['failed']} skipped={c['skipped']}"
        )
        self._print(line)
        return line

    def _paint(self, status: Status, text: str) -> str:
        if not getattr(self.out, "isatty", lambda: False)():
            return text
        return f"\033[{_COLORS[status]}m{text}\033[0m"

    def _print(self, line: str) -> None:
        print(line, file=self.out, flush=True)
