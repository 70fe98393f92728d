"""The Invoke entry point (tasks.py): MockContext tests and `invoke --list`."""

from __future__ import annotations

import inspect
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from invoke import Collection, Config, Exit, MockContext, Result, Task

import ops.testing.bench
import ops.testing.load
import ops.testing.runs
import tasks

ROOT = Path(__file__).resolve().parents[2]
INVOKE = Path(sys.executable).parent / "invoke"
PYTEST = re.compile(r".* -m pytest\b.*")


def all_tasks() -> dict[str, Task]:  # type: ignore[type-arg]
    ns = Collection.from_module(tasks)
    return {name: ns[name] for name in ns.task_names}


def ran(c: MockContext) -> str:
    assert c.run.call_count == 1  # type: ignore[attr-defined]
    command: str = c.run.call_args.args[0]  # type: ignore[attr-defined]
    return command


def test_test_task_runs_pytest() -> None:
    c = MockContext(run={PYTEST: Result("1 passed")}, repeat=True)
    tasks.test(c)
    command = ran(c)
    argv = shlex.split(command)
    assert argv[:3] == [sys.executable, "-m", "pytest"]
    assert "-k" not in argv
    assert c.run.call_args.kwargs.get("pty") is False  # type: ignore[attr-defined]


def test_test_task_passes_k_and_args() -> None:
    c = MockContext(run={PYTEST: Result()}, repeat=True)
    tasks.test(c, k="contract and not slow", args="-x --basetemp=/tmp/bt")
    argv = shlex.split(ran(c))
    i = argv.index("-k")
    assert argv[i + 1] == "contract and not slow"
    assert argv[-2:] == ["-x", "--basetemp=/tmp/bt"]


def test_test_task_exact_command_with_mock_context() -> None:
    expected = f"{sys.executable} -m pytest -k unit -q"
    c = MockContext(run={expected: Result("ok")})
    tasks.test(c, k="unit", args="-q")  # MockContext raises NotImplementedError otherwise
    assert ran(c) == expected


def test_test_task_quotes_k_safely() -> None:
    c = MockContext(run={PYTEST: Result()}, repeat=True)
    tasks.test(c, k="test_it's_fine")
    argv = shlex.split(ran(c))
    assert argv[argv.index("-k") + 1] == "test_it's_fine"


@pytest.mark.parametrize("name", ["deploy", "down", "status"])
def test_unknown_env_exits_naming_the_file(name: str) -> None:
    c = MockContext()
    with pytest.raises(Exit) as info:
        getattr(tasks, name)(c, env="no-such-env")
    message = str(info.value.message)
    assert str(ROOT / "environments" / "no-such-env.toml") in message
    assert "not found" in message
    assert "local" in message  # the known environments are listed
    assert info.value.code != 0


def test_bad_env_path_exits_naming_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(Exit) as info:
        tasks.deploy(MockContext(), env=str(missing))
    assert str(missing) in str(info.value.message)


def test_invalid_env_file_exits_naming_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text('[restate]\nruntime = "podman"\n')
    with pytest.raises(Exit) as info:
        tasks.status(MockContext(), env=str(bad))
    message = str(info.value.message)
    assert str(bad) in message
    assert "restate." in message


def test_bad_env_name_exits() -> None:
    with pytest.raises(Exit) as info:
        tasks.down(MockContext(), env="b@d")
    assert "b@d" in str(info.value.message)


def test_every_task_documents_itself_and_its_options() -> None:
    found = all_tasks()
    assert {"deploy", "down", "status", "test"} <= set(found)
    for name, task in found.items():
        assert (task.__doc__ or "").strip(), f"{name} has no docstring"
        params = [p for p in inspect.signature(task.body).parameters if p not in ("c", "ctx")]
        for param in params:
            assert task.help.get(param, "").strip(), f"{name} --{param} has no help"


def test_env_default_is_local() -> None:
    for name, task in all_tasks().items():
        params = inspect.signature(task.body).parameters
        if "env" in params:
            assert params["env"].default == "local", name


def test_invoke_list_has_one_line_help_per_task() -> None:
    proc = subprocess.run(
        [str(INVOKE), "--list"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    listed: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"^  (\S+)(?:\s+(\S.*))?$", line)
        if m:
            listed[m.group(1)] = m.group(2) or ""
    assert set(all_tasks()) <= set(listed), proc.stdout
    empty = [name for name, text in listed.items() if not text.strip()]
    assert empty == [], f"tasks without help in `invoke --list`: {empty}"


def test_a_bench_with_a_bad_phase_prints_why_and_exits_non_zero(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    phase = {"restate-server": 1.0, "service": 1.0, "k6": 1.0, "wall": 2.0}
    figures = {
        "ok": False,
        "problems": ["no-op: 12 unexpected answers"],
        "noop_per_s": 900.0,
        "noop_p99_ms": 9.0,
        "saga_per_s": 150.0,
        "saga_ratio": 0.167,
        "checkout_of_saga": 0.8,
        "checkouts_per_s": 120.0,
        "checkout_p50_ms": 100.0,
        "checkout_p99_ms": 200.0,
        "ratio": 0.133,
        "cpu_noop_s": phase,
        "cpu_saga_s": phase,
        "cpu_checkout_s": phase,
    }
    monkeypatch.setattr(ops.testing.bench, "bench", lambda *args, **kwargs: figures)
    with pytest.raises(Exit) as exited:
        tasks.bench(MockContext())
    assert exited.value.code == 1
    assert "NOT VALID        no-op: 12 unexpected answers" in capsys.readouterr().out


def test_a_bench_of_no_rounds_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(Exit) as exited:
        tasks.bench(MockContext(), rounds=0)
    assert exited.value.code == 2
    assert "--rounds must be at least 1, got 0" in str(exited.value.message)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("fast", "--gateway-latency takes milliseconds, not 'fast'"),
        ("-5", "milliseconds >= 0, not -5.0"),
        ("nan", "milliseconds >= 0, not nan"),
    ],
)
def test_load_refuses_a_bad_gateway_latency_before_running_anything(
    monkeypatch: pytest.MonkeyPatch, value: str, says: str
) -> None:
    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("k6 must not start")

    monkeypatch.setattr(ops.testing.runs, "drive", no_run)
    with pytest.raises(Exit) as exited:
        tasks.load(MockContext(), gateway_latency=value)
    assert exited.value.code == 2
    assert says in str(exited.value.message)


def test_load_refuses_a_gateway_latency_for_a_gateway_it_does_not_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    hosted = tmp_path / "hosted.toml"
    hosted.write_text(
        '[restate]\nruntime = "external"\ningress_url = "http://127.0.0.1:1"\n'
        'admin_url = "http://127.0.0.1:2"\ntoken_env = ""\n'
        '[service]\nmode = "url"\nurl = "http://127.0.0.1:3"\n'
    )
    monkeypatch.setattr(ops.testing.runs, "drive", lambda *a, **k: pytest.fail("k6 started"))
    with pytest.raises(Exit) as exited:
        tasks.load(MockContext(), env=str(hosted), gateway_latency="500")
    assert "needs the mock gateway; hosted's gateway is external" in str(exited.value.message)


# --- invoke --dry, and the invocation tasks' arguments --------------------------------


def dry_context() -> MockContext:
    """What `invoke --dry TASK` hands a task: run.dry set in its config."""
    return MockContext(config=Config(overrides={"run": {"dry": True}}))


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("load", lambda c: tasks.load(c)),
        ("bench", lambda c: tasks.bench(c)),
        ("chaos", lambda c: tasks.chaos(c)),
        ("test-all", lambda c: tasks.test_all(c)),
    ],
)
def test_dry_refuses_tasks_that_would_act_without_a_check_mode(name: str, call: Any) -> None:
    with pytest.raises(Exit) as info:
        call(dry_context())
    assert info.value.code == 2
    assert f"invoke --dry {name}: {name} has no check mode" in str(info.value.message)
    assert "nothing was done" in str(info.value.message)


@pytest.mark.parametrize("name", ["deploy", "down"])
def test_dry_runs_deploy_and_down_as_check(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_play(env: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return type("P", (), {"failed": False})()

    monkeypatch.setattr(tasks.ops.release.stack, name, fake_play)
    getattr(tasks, name)(dry_context())
    assert seen["check"] is True
    seen.clear()
    getattr(tasks, name)(MockContext())
    assert seen["check"] is False


def test_dry_runs_cancel_as_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under --dry, cancel names what it would end and calls no cancel."""
    from ops.clients import invocations as inv_mod

    stuck = inv_mod.from_row(
        {
            "id": "inv_1ebPkxAd0hqz0snLun9SxDg9As64NoXv6v",
            "target": "Checkout/process",
            "target_service_name": "Checkout",
            "status": "paused",
        }
    )
    monkeypatch.setattr(inv_mod, "open_invocations", lambda admin: [stuck])
    monkeypatch.setattr(inv_mod.AdminClient, "cancel", lambda *a: pytest.fail("cancelled"))
    tasks.cancel(dry_context(), stuck=True)  # returns: the play reported "would cancel"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "name invocation ids, or select with --stuck and/or --older-than"),
        (
            {"id": ["inv_1ebPkxAd0hqz0snLun9SxDg9As64NoXv6v"], "stuck": True},
            "not both",
        ),
        ({"stuck": True, "force": True}, "--force only applies to --kill"),
        ({"older_than": "soon"}, "--older-than takes a duration"),
        ({"id": ["inv_short"]}, "not an invocation id (inv_...): inv_short"),
    ],
)
def test_cancel_refuses_bad_arguments_before_acting(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(Exit) as info:
        tasks.cancel(MockContext(), env=str(ROOT / "environments" / "local.toml"), **kwargs)
    assert info.value.code == 2 and message in str(info.value.message)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": "stuck"}, "--status takes one of pending, scheduled"),
        ({"older_than": "3 weeks"}, "--older-than takes a duration"),
    ],
)
def test_invocations_refuses_bad_arguments(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(Exit) as info:
        tasks.invocations(MockContext(), **kwargs)
    assert info.value.code == 2 and message in str(info.value.message)
