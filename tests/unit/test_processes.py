"""Background processes (ops/base/processes.py) with real, short-lived Python children."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ops.base.errors import PortInUse, ProcessError
from ops.base.processes import (
    PGRP,
    STATE,
    ProcessManager,
    ProcessSpec,
    free_port,
    http_ready,
    pid_alive,
    poll_until,
    port_open,
    proc_stat,
    proc_stats,
)
from ops.base.steps import Status, StepContext
from ops.server.runtimes import stop_step

SERVER = (
    "import http.server, sys\n"
    "srv = http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])),"
    " http.server.SimpleHTTPRequestHandler)\n"
    "print('serving', flush=True)\n"
    "srv.serve_forever()\n"
)

# Spawns a sleeping grandchild (same process group), writes its PID, then serves.
PARENT = (
    "import subprocess, sys, pathlib\n"
    "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "pathlib.Path(sys.argv[2]).write_text(str(g.pid))\n" + SERVER
)


def wait_until(probe: Callable[[], bool], timeout: float = 5.0) -> bool:
    return poll_until(probe, timeout, 0.02)


def server_spec(
    tmp_path: Path, port: int, name: str = "web", code: str = SERVER, *extra: str
) -> ProcessSpec:
    return ProcessSpec(
        name=name,
        argv=[sys.executable, "-c", code, str(port), *extra],
        cwd=tmp_path,
        ports=[("127.0.0.1", port)],
        ready=http_ready(f"http://127.0.0.1:{port}/"),
        ready_timeout=10.0,
    )


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[ProcessManager]:
    manager = ProcessManager(tmp_path / "state")
    yield manager
    for name in manager.known():
        manager.stop(name, timeout=2.0)


# --- helpers -------------------------------------------------------------------------


def test_free_port_is_bindable() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    assert not port_open("127.0.0.1", port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_port_open_sees_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert port_open("127.0.0.1", port)
    assert not port_open("127.0.0.1", port)


def test_http_ready_without_server() -> None:
    assert http_ready(f"http://127.0.0.1:{free_port()}/")() is False


def test_pid_alive() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert pid_alive(child.pid) is False
    assert pid_alive(os.getpid()) is True


def test_fingerprint_is_stable_and_sensitive(tmp_path: Path) -> None:
    spec = server_spec(tmp_path, 1)
    same = server_spec(tmp_path, 1)
    assert spec.fingerprint() == same.fingerprint()
    assert server_spec(tmp_path, 2).fingerprint() != spec.fingerprint()
    secret = ProcessSpec("web", spec.argv, tmp_path, [], lambda: True, secret_env={"K": "v1"})
    other = ProcessSpec("web", spec.argv, tmp_path, [], lambda: True, secret_env={"K": "v2"})
    assert secret.fingerprint() != other.fingerprint()
    assert "v1" not in repr(secret)
    assert "v1" not in secret.fingerprint()


# --- ProcessManager ------------------------------------------------------------------


def test_start_and_stop(procs: ProcessManager, tmp_path: Path) -> None:
    port = free_port()
    spec = server_spec(tmp_path, port)
    pid = procs.start(spec)
    try:
        data = json.loads(procs.pid_file("web").read_text())
        assert data["pid"] == pid
        assert data["fingerprint"] == spec.fingerprint()
        info = procs.info("web")
        assert info.alive
        assert info.pid == pid
        assert info.fingerprint == spec.fingerprint()
        assert info.log == tmp_path / "state" / "logs" / "web.log"
        assert port_open("127.0.0.1", port)
        assert spec.ready()
        assert procs.known() == ["web"]
        assert "--- start" in procs.log_file("web").read_text()
    finally:
        stopped = procs.stop("web", timeout=5.0)
    assert stopped is True
    assert not pid_alive(pid)
    assert not procs.pid_file("web").exists()
    assert procs.info("web").alive is False
    assert wait_until(lambda: not port_open("127.0.0.1", port))
    assert procs.stop("web") is False  # second stop: nothing to do


def test_start_on_a_taken_port(procs: ProcessManager, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(PortInUse) as info:
            procs.start(server_spec(tmp_path, port))
    assert str(port) in str(info.value)
    assert "web" in str(info.value)
    assert not procs.pid_file("web").exists()
    assert procs.known() == []


def test_child_that_exits_at_once(procs: ProcessManager, tmp_path: Path) -> None:
    spec = ProcessSpec(
        name="crash",
        argv=[sys.executable, "-c", "import sys; print('boom: bad config'); sys.exit(3)"],
        cwd=tmp_path,
        ports=[],
        ready=lambda: False,
        ready_timeout=10.0,
    )
    started = time.monotonic()
    with pytest.raises(ProcessError) as info:
        procs.start(spec)
    assert time.monotonic() - started < 5.0  # fails fast, not at the ready timeout
    err = info.value
    log = procs.log_file("crash")
    assert err.log == log
    assert str(log) in str(err)
    assert "boom: bad config" in str(err)
    assert "exited during start-up" in str(err)
    assert not procs.pid_file("crash").exists()


def test_missing_executable(procs: ProcessManager, tmp_path: Path) -> None:
    spec = ProcessSpec("ghost", [str(tmp_path / "no-such-binary")], tmp_path, [], lambda: True)
    with pytest.raises(ProcessError, match="ghost: cannot run"):
        procs.start(spec)


def test_not_ready_in_time_is_stopped(procs: ProcessManager, tmp_path: Path) -> None:
    spec = ProcessSpec(
        name="slow",
        argv=[sys.executable, "-c", "import time; time.sleep(30)"],
        cwd=tmp_path,
        ports=[],
        ready=lambda: False,
        ready_timeout=0.3,
    )
    with pytest.raises(ProcessError, match=r"not ready within 0\.3s") as info:
        procs.start(spec)
    assert info.value.log == procs.log_file("slow")
    assert not procs.pid_file("slow").exists()
    assert procs.known() == []


def test_stop_kills_the_whole_group(procs: ProcessManager, tmp_path: Path) -> None:
    port = free_port()
    grandchild_file = tmp_path / "grandchild.pid"
    spec = server_spec(tmp_path, port, "parent", PARENT, str(grandchild_file))
    pid = procs.start(spec)
    try:
        assert wait_until(grandchild_file.exists)
        grandchild = int(grandchild_file.read_text())
        assert pid_alive(grandchild)
    finally:
        procs.stop("parent", timeout=5.0)
    assert not pid_alive(pid)
    assert wait_until(lambda: not pid_alive(grandchild), timeout=3.0)


def test_kill_keeps_pid_file(procs: ProcessManager, tmp_path: Path) -> None:
    pid = procs.start(server_spec(tmp_path, free_port()))
    try:
        assert procs.kill("web") == pid
        assert wait_until(lambda: not procs.info("web").alive)
        assert procs.pid_file("web").exists()
        assert procs.kill("web") is None
    finally:
        procs.stop("web", timeout=2.0)
    assert not procs.pid_file("web").exists()


def test_stale_pid_file(procs: ProcessManager) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    procs.run_dir.mkdir(parents=True)
    procs.pid_file("old").write_text(
        json.dumps({"pid": dead.pid, "fingerprint": "abc", "command": sys.executable})
    )
    info = procs.info("old")
    assert info.pid == dead.pid
    assert info.fingerprint == "abc"
    assert info.alive is False
    assert procs.stop("old") is False
    assert not procs.pid_file("old").exists()


def stop_within(
    procs: ProcessManager, name: str, seconds: float, cleanup: Callable[[], None]
) -> bool:
    """Run `procs.stop(name)` in a thread; True if it returned within `seconds`.

    `cleanup` runs either way, so a hanging stop is released before the test ends."""
    done = threading.Event()

    def run() -> None:
        procs.stop(name, timeout=2.0)
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    try:
        return done.wait(seconds)
    finally:
        cleanup()
        thread.join(10)


def test_stop_with_reused_pid_returns_at_once(procs: ProcessManager) -> None:
    other = subprocess.Popen(["sleep", "30"])

    def cleanup() -> None:
        other.kill()
        other.wait()

    procs.run_dir.mkdir(parents=True)
    procs.pid_file("x").write_text(
        json.dumps({"pid": other.pid, "command": "/opt/restate/restate-server"})
    )
    assert procs.info("x").alive is False
    assert stop_within(procs, "x", 1.0, cleanup), "stop() hung on a PID that is not ours"
    assert not procs.pid_file("x").exists()


@pytest.mark.parametrize(
    ("argv", "record"),
    [
        # another program
        (["sleep", "30"], {"command": "/opt/restate/restate-server"}),
        # the same command, started at another time than the one recorded
        (
            [sys.executable, "-c", "import time; time.sleep(30)"],
            {"command": sys.executable, "started": "1"},
        ),
    ],
    ids=["other-command", "same-command-other-start"],
)
def test_a_reused_pid_is_not_ours_and_never_signalled(
    procs: ProcessManager, argv: list[str], record: dict[str, str]
) -> None:
    other = subprocess.Popen(argv)
    try:
        procs.run_dir.mkdir(parents=True)
        procs.pid_file("x").write_text(json.dumps({"pid": other.pid, **record}))
        info = procs.info("x")
        assert info.alive is False and info.reused is True
        assert procs.kill("x") is None
        assert other.poll() is None  # not signalled
    finally:
        other.kill()
        other.wait()
        procs.pid_file("x").unlink(missing_ok=True)


def test_a_started_process_is_recognised_by_its_start_time(
    procs: ProcessManager, tmp_path: Path
) -> None:
    pid = procs.start(server_spec(tmp_path, free_port()))
    record = json.loads(procs.pid_file("web").read_text())
    assert record["started"] is not None and int(record["started"]) > 0
    assert procs.info("web").alive and procs.info("web").pid == pid
    del record["started"]  # a PID file from before start times: the command decides
    procs.pid_file("web").write_text(json.dumps(record))
    assert procs.info("web").alive


def test_down_step_stops_the_orphans_of_a_dead_leader(
    procs: ProcessManager, tmp_path: Path
) -> None:
    grandchild_file = tmp_path / "grandchild.pid"
    pid = procs.start(server_spec(tmp_path, free_port(), "parent", PARENT, str(grandchild_file)))
    assert wait_until(grandchild_file.exists)
    grandchild = int(grandchild_file.read_text())
    os.kill(pid, signal.SIGKILL)  # only the leader
    assert wait_until(lambda: not pid_alive(pid))
    try:
        step = stop_step(procs, "parent")
        would = step(StepContext(check=True))
        assert would.status is Status.CHANGED and "what is left" in would.message
        assert pid_alive(grandchild)
        done = step(StepContext())
        assert done.status is Status.CHANGED
        assert wait_until(lambda: not pid_alive(grandchild))
        assert step(StepContext()).status is Status.OK
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(grandchild, signal.SIGKILL)


def test_stop_kills_orphans_of_a_dead_leader(procs: ProcessManager, tmp_path: Path) -> None:
    port = free_port()
    grandchild_file = tmp_path / "grandchild.pid"
    pid = procs.start(server_spec(tmp_path, port, "parent", PARENT, str(grandchild_file)))
    assert wait_until(grandchild_file.exists)
    grandchild = int(grandchild_file.read_text())
    os.kill(pid, signal.SIGKILL)  # only the leader
    assert wait_until(lambda: not pid_alive(pid))
    assert pid_alive(grandchild)

    def cleanup() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(grandchild, signal.SIGKILL)

    assert stop_within(procs, "parent", 1.0, cleanup), "stop() hung on the orphaned group"
    assert not pid_alive(grandchild)


@pytest.mark.parametrize("content", ["", "not json", "{}", '{"pid": "x"}', "[1]"])
def test_corrupt_pid_file(procs: ProcessManager, content: str) -> None:
    procs.run_dir.mkdir(parents=True)
    procs.pid_file("bad").write_text(content)
    info = procs.info("bad")
    assert info.pid is None
    assert info.alive is False


def test_info_without_pid_file(procs: ProcessManager) -> None:
    info = procs.info("nothing")
    assert (info.pid, info.alive, info.fingerprint) == (None, False, None)
    assert procs.known() == []


def test_tail(procs: ProcessManager) -> None:
    assert procs.tail("none") == "(no log)"
    procs.log_dir.mkdir(parents=True)
    procs.log_file("t").write_text("\n".join(f"line {i}" for i in range(30)))
    tail = procs.tail("t", lines=3).splitlines()
    assert [line.strip() for line in tail] == ["line 27", "line 28", "line 29"]


def test_proc_stat_reads_past_a_command_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    odd = tmp_path / "a b) (c"  # the kernel names the process after the file it runs
    odd.symlink_to(sys.executable)
    sleep = "import time; time.sleep(30)"
    proc = subprocess.Popen([str(odd), "-c", sleep], start_new_session=True)
    try:
        assert poll_until(lambda: (proc_stat(proc.pid) or [""])[STATE] in ("S", "R"), 5.0)
        fields = proc_stat(proc.pid)
        assert fields is not None
        assert int(fields[PGRP]) == proc.pid  # its own session: its own group
        stats = proc_stats()
        assert stats is not None and any(int(f[PGRP]) == proc.pid for f in stats)
    finally:
        proc.kill()
        proc.wait()
    assert proc_stat(proc.pid) is None
    assert proc_stat(2**22 + 12345) is None


def test_children_inherit_only_the_listed_variables_and_all_of_them_count(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A variable in the caller's shell neither leaks into a managed process nor hides
    from its fingerprint."""
    monkeypatch.setenv("NEXUS_PAYMENT_ATTEMPTS", "99")  # would change the service unseen
    monkeypatch.setenv("TZ", "UTC")
    spec = ProcessSpec("probe", [sys.executable, "-c", "pass"], tmp_path, [], lambda: True,
                       env={"OWN": "1"})  # fmt: skip
    environ = spec.environ()
    assert "NEXUS_PAYMENT_ATTEMPTS" not in environ
    assert environ["OWN"] == "1" and environ["TZ"] == "UTC" and "PATH" in environ
    before = spec.fingerprint()
    monkeypatch.setenv("NEXUS_PAYMENT_ATTEMPTS", "1")
    assert spec.fingerprint() == before  # not inherited, so it cannot matter
    monkeypatch.setenv("TZ", "Europe/Rome")
    assert spec.fingerprint() != before  # inherited, so it counts
