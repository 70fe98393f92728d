"""Ansible-style plays (ops/base/steps.py): a line per step, a recap, check mode and diffs."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.base import steps
from ops.base.errors import ConfigError, NexusError, NotConverged
from ops.base.steps import Play, Result, Status, StepContext


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def play(title: str = "deploy", **ctx: bool) -> tuple[Play, io.StringIO]:
    out = io.StringIO()
    return Play(title, ctx=StepContext(**ctx), out=out), out


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_header_line() -> None:
    _, out = play("deploy local")
    assert lines(out) == ["PLAY [deploy local]"]


def test_check_mode_header() -> None:
    _, out = play("deploy local", check=True)
    assert lines(out) == ["PLAY [deploy local] (check mode: nothing will be changed)"]


def test_one_line_per_step_and_recap() -> None:
    p, out = play()
    p.run("server", lambda ctx: Result.ok("restate-server 1.7.12 running"))
    p.run("gateway", lambda ctx: Result.changed("started on :9081"))
    p.run("service", lambda ctx: Result.skipped("mode is url"))
    p.run("register", lambda ctx: Result.ok("up to date"))
    recap = p.recap()
    assert recap == "RECAP [deploy] ok=2 changed=1 failed=0 skipped=1"
    text = lines(out)
    assert len(text) == 6  # header, four steps, recap
    assert text[1].startswith("ok")
    assert "server" in text[1]
    assert text[1].endswith("restate-server 1.7.12 running")
    assert text[2].startswith("changed") and "gateway" in text[2]
    assert text[3].startswith("skipped") and "mode is url" in text[3]
    assert text[-1] == recap
    assert p.counts() == {"ok": 2, "changed": 1, "failed": 0, "skipped": 1}
    assert not p.failed


def test_run_returns_result_named_after_step() -> None:
    p, _ = play()
    result = p.run("smoke", lambda ctx: Result.ok("fine"))
    assert result.step == "smoke"
    assert result.status is Status.OK
    assert p.results == [result]


@pytest.mark.parametrize("error", [NexusError("boom"), ConfigError("bad key"), NotConverged("x")])
def test_failure_skips_later_steps(error: NexusError) -> None:
    p, out = play()
    calls: list[str] = []

    def fails(ctx: StepContext) -> Result:
        calls.append("fails")
        raise error

    def later(ctx: StepContext) -> Result:
        calls.append("later")
        return Result.ok("should not run")

    p.run("first", lambda ctx: Result.ok("fine"))
    failed = p.run("second", fails)
    skipped = p.run("third", later)
    p.run("fourth", later)
    assert calls == ["fails"]
    assert failed.status is Status.FAILED
    assert failed.message == str(error)
    assert skipped.status is Status.SKIPPED
    assert "earlier step failed" in skipped.message
    assert p.failed
    assert p.recap().endswith("ok=1 changed=0 failed=1 skipped=2")
    text = lines(out)
    assert text[2].startswith("failed") and str(error) in text[2]


def test_failure_message_includes_log() -> None:
    p, out = play()

    def fails(ctx: StepContext) -> Result:
        raise NexusError("server exited", log=Path("/tmp/x.log"))

    p.run("server", fails)
    assert "server exited (log: /tmp/x.log)" in out.getvalue()


def test_other_exceptions_propagate() -> None:
    p, _ = play()

    def bug(ctx: StepContext) -> Result:
        raise KeyError("programming error")

    with pytest.raises(KeyError):
        p.run("x", bug)


def test_check_mode_label_and_context() -> None:
    p, out = play(check=True)
    seen: list[StepContext] = []

    def step(ctx: StepContext) -> Result:
        seen.append(ctx)
        return Result.changed("would start gateway")

    p.run("gateway", step)
    p.run("server", lambda ctx: Result.ok("running"))
    assert seen[0].check is True
    text = lines(out)
    assert text[1].startswith("changed (would)")
    assert text[2].startswith("ok ")
    assert "(would)" not in text[2]
    assert p.recap().endswith("ok=1 changed=1 failed=0 skipped=0")


def test_diff_hidden_without_show_diff() -> None:
    p, out = play()
    p.run(
        "config", lambda ctx: Result.changed("rewrote", ["- partitions = 24", "+ partitions = 4"])
    )
    text = out.getvalue()
    assert "partitions" not in text
    assert len(lines(out)) == 2


def test_diff_shown_with_show_diff() -> None:
    p, out = play(show_diff=True)
    p.run(
        "config", lambda ctx: Result.changed("rewrote", ["- partitions = 24", "+ partitions = 4"])
    )
    text = lines(out)
    assert len(text) == 4
    assert text[2].strip() == "- partitions = 24"
    assert text[3].strip() == "+ partitions = 4"
    assert text[2].startswith(" ")  # indented under the step line


def test_multiline_message_is_indented() -> None:
    p, out = play()
    p.run("server", lambda ctx: Result(Status.FAILED, "exited\n    last log line"))
    text = lines(out)
    assert text[1].endswith("exited")
    assert text[2].strip() == "last log line"
    assert text[2].startswith(" " * 31)


def test_empty_message() -> None:
    p, out = play()
    p.run("noop", lambda ctx: Result.ok(""))
    assert lines(out)[1].split() == ["ok", "noop"]


def test_no_colour_without_tty() -> None:
    p, out = play()
    p.run("a", lambda ctx: Result.ok("x"))
    assert "\033[" not in out.getvalue()


def test_colour_on_a_tty() -> None:
    out = Tty()
    p = Play("t", out=out)
    p.run("a", lambda ctx: Result.changed("x"))
    assert "\033[33m" in out.getvalue()
    assert "\033[0m" in out.getvalue()


def test_empty_play_recap() -> None:
    p, _ = play("down")
    assert p.recap() == "RECAP [down] ok=0 changed=0 failed=0 skipped=0"
    assert not p.failed


class FakeClock:
    def __init__(self, *readings: float) -> None:
        self._readings: Iterator[float] = iter(readings)

    def monotonic(self) -> float:
        return next(self._readings)


def test_slow_steps_show_their_time(monkeypatch: pytest.MonkeyPatch) -> None:
    p, out = play()
    monkeypatch.setattr(steps, "time", FakeClock(10.0, 12.25, 20.0, 20.1))
    slow = p.run("server", lambda ctx: Result.changed("started"))
    fast = p.run("gateway", lambda ctx: Result.ok("running"))
    assert slow.seconds == pytest.approx(2.25)
    assert fast.seconds == pytest.approx(0.1)
    text = lines(out)
    assert text[1].endswith("started  (2.2s)") or text[1].endswith("started  (2.3s)")
    assert text[2].endswith("running")


@pytest.mark.parametrize("check", [True, False])
def test_later_steps_learn_which_earlier_steps_would_change(check: bool) -> None:
    p, _ = play(check=check)
    p.run("service", lambda ctx: Result.changed("would start"))
    p.run("gateway", lambda ctx: Result.ok("running"))
    seen = p.run("smoke", lambda ctx: Result.ok(",".join(ctx.would_change)))
    assert seen.message == ("service" if check else "")


# --- JSON output mode ---------------------------------------------------------------


def json_play(*, check: bool = False, redact: tuple[str, ...] = ()) -> tuple[Play, io.StringIO]:
    out = io.StringIO()
    with steps.output(json=True, redact=redact):
        made = Play("deploy local", ctx=StepContext(check=check), out=out)
    return made, out


def test_json_mode_prints_one_object_per_step_and_a_recap() -> None:
    p, out = json_play()
    p.run("server", lambda ctx: Result.ok("running"))
    p.run("service", lambda ctx: Result.changed("restarted", ["- old", "+ new"]))
    p.run("smoke", lambda ctx: Result.skipped("not yet"))
    text = p.recap()
    records = [json.loads(line) for line in lines(out)]
    assert [r.get("name") for r in records[:3]] == ["server", "service", "smoke"]
    assert records[1] == {
        "play": "deploy local",
        "name": "service",
        "status": "changed",
        "would": False,
        "message": "restarted",
        "diff": ["- old", "+ new"],
        "seconds": records[1]["seconds"],
    }
    assert isinstance(records[1]["seconds"], float)
    recap = records[-1]
    assert recap["recap"] == p.counts() == {"ok": 1, "changed": 1, "failed": 0, "skipped": 1}
    assert recap["failed"] is False and recap["check"] is False
    # The text recap line says the same as the recap object.
    assert text == "RECAP [deploy local] ok=1 changed=1 failed=0 skipped=1"


def test_json_mode_failure_and_check_mode() -> None:
    p, out = json_play(check=True)
    p.run("service", lambda ctx: Result.changed("would restart"))
    p.run("registration", lambda ctx: (_ for _ in ()).throw(NotConverged("not there")))
    p.recap()
    records = [json.loads(line) for line in lines(out)]
    assert records[0]["would"] is True
    assert records[1]["status"] == "failed" and records[1]["message"] == "not there"
    assert records[-1]["failed"] is True and records[-1]["check"] is True


def test_secrets_are_masked_in_json_and_text() -> None:
    secret = "key_0123456789abcdef"
    p, out = json_play(redact=(secret,))
    p.run("registration", lambda ctx: Result.changed(f"token {secret}", [f"+ {secret}"]))
    p.recap()
    assert secret not in out.getvalue()
    record = json.loads(lines(out)[0])
    assert record["message"] == "token ***" and record["diff"] == ["+ ***"]
    text = io.StringIO()
    with steps.output(redact=[secret, None, "short"]):
        Play("x", out=text).run("a", lambda ctx: Result.ok(f"{secret} short"))
    assert secret not in text.getvalue() and "*** short" in text.getvalue()


def test_output_mode_ends_with_its_block() -> None:
    with steps.output(json=True):
        pass
    _, out = play("deploy local")
    assert lines(out) == ["PLAY [deploy local]"]
