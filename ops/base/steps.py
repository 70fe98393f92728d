"""Ansible-style steps: each reads state, acts only on a difference, and reports
`ok`, `changed`, `failed` or `skipped`; a play ends with a recap line.

Two output modes: text (a line per step) and JSON (one object per line per step, then a
recap object, like Ansible's JSON callback). A task picks the mode for every play it runs
with `output(json=True)`, so plays built elsewhere need no new argument. Either way, the
values given to `output(redact=...)` (tokens, keys) are masked in whatever is printed."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TextIO

from ops.base.errors import NexusError


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
class StepContext:
    """What every step is told: check mode, whether diffs are wanted, and (in check
    mode) which earlier steps would have changed something, for steps whose answer
    depends on those changes."""

    check: bool = False
    show_diff: bool = False
    would_change: list[str] = field(default_factory=list)


StepFn = Callable[[StepContext], Result]


@dataclass(frozen=True)
class Output:
    """How plays print: `json` lines or text, and which secret values to mask."""

    json: bool = False
    redact: tuple[str, ...] = ()

    def scrub(self, text: str) -> str:
        for secret in self.redact:
            text = text.replace(secret, "***")
        return text


_OUTPUT: ContextVar[Output | None] = ContextVar("nexus_play_output", default=None)
# Shorter values are not masked: they would mangle ordinary words, and are no secret.
_MIN_SECRET = 8


@contextmanager
def output(*, json: bool = False, redact: Iterable[str | None] = ()) -> Iterator[Output]:
    """Every play created inside prints in this mode and masks these values."""
    mode = Output(json, tuple(v for v in redact if v and len(v) >= _MIN_SECRET))
    token = _OUTPUT.set(mode)
    try:
        yield mode
    finally:
        _OUTPUT.reset(token)


_COLORS = {Status.OK: "32", Status.CHANGED: "33", Status.FAILED: "31", Status.SKIPPED: "36"}


@dataclass
class Play:
    """Runs steps in order, prints a line per step, stops at the first failure."""

    title: str
    ctx: StepContext = field(default_factory=StepContext)
    out: TextIO = field(default_factory=lambda: sys.stdout)
    results: list[Result] = field(default_factory=list)
    mode: Output = field(default_factory=lambda: _OUTPUT.get() or Output())

    def __post_init__(self) -> None:
        if self.mode.json:
            return  # the recap object names the play; a header line would not parse
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
        if self.mode.json:
            self._emit(
                {
                    "play": self.title,
                    "name": result.step,
                    "status": result.status.value,
                    "would": self.ctx.check and result.status is Status.CHANGED,
                    "message": result.message,
                    "diff": list(result.diff),
                    "seconds": round(result.seconds, 3),
                }
            )
            return
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
        if self.mode.json:
            self._emit(
                {
                    "play": self.title,
                    "recap": c,
                    "check": self.ctx.check,
                    "failed": self.failed,
                    "seconds": round(sum(r.seconds for r in self.results), 3),
                }
            )
        else:
            self._print(line)
        return line

    def _emit(self, record: dict[str, object]) -> None:
        """One JSON object on its own line, secrets masked in every string of it."""
        clean = {
            k: self.mode.scrub(v)
            if isinstance(v, str)
            else [self.mode.scrub(x) for x in v]
            if isinstance(v, list)
            else v
            for k, v in record.items()
        }
        self._print(json.dumps(clean, ensure_ascii=False))

    def _paint(self, status: Status, text: str) -> str:
        if self.mode.json or not getattr(self.out, "isatty", lambda: False)():
            return text
        return f"\033[{_COLORS[status]}m{text}\033[0m"

    def _print(self, line: str) -> None:
        print(self.mode.scrub(line), file=self.out, flush=True)
