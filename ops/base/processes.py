"""Background processes with PID files, logs, readiness waits and clean stops.

Each process lives under `<state>/run/NAME.pid` with its log in `<state>/logs/NAME.log`
and a fingerprint of how it was started, so a deploy can tell "running as wanted" from
"running with an old configuration". Processes start in their own session, and stopping
signals the whole process group: a wrapper never leaves its real binary behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from ops.base.errors import PortInUse, ProcessError

PORT_RELEASE_S = 10.0

# Popen objects of children started by this interpreter, so they can be reaped.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class ProcessSpec:
    """How to run one background process and how to know it is ready."""

    name: str
    argv: Sequence[str]
    cwd: Path
    ports: Sequence[tuple[str, int]]
    ready: Callable[[], bool]
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, str] = field(default_factory=dict, repr=False)
    ready_timeout: float = 60.0
    inputs: str = ""  # anything else that should restart the process when it changes
    stop_timeout: float = 15.0  # SIGTERM, then SIGKILL after this many seconds

    def environ(self) -> dict[str, str]:
        """The child's whole environment: the few variables it inherits, then its own."""
        return {**inherited_environ(), **self.env, **self.secret_env}

    def fingerprint(self) -> str:
        """Stable digest of argv, the whole environment and inputs (secrets included,
        never shown): nothing the child sees is left out."""
        blob = json.dumps([list(self.argv), sorted(self.environ().items()), self.inputs])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# What a managed process inherits from the toolkit's own environment: where programs and
# certificates are, the locale and time zone. Nothing else leaks in (a NEXUS_* or
# RESTATE_* variable in the caller's shell would change a process without changing its
# fingerprint, or a service without changing its version).
INHERITED: tuple[str, ...] = (
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR",
)  # fmt: skip


def inherited_environ() -> dict[str, str]:
    """The part of the toolkit's environment that managed processes inherit."""
    return {name: os.environ[name] for name in INHERITED if name in os.environ}


@dataclass(frozen=True)
class ProcessInfo:
    """A managed process as found on disk and in the process table."""

    name: str
    pid: int | None
    alive: bool
    fingerprint: str | None
    log: Path
    stop_timeout: float = 15.0
    reused: bool = False  # the PID now belongs to another program: never signal it
    ports: list[tuple[str, int]] = field(default_factory=list)


def poll_until(predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll `predicate` until it holds or `timeout` seconds pass; its last answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    """True when something accepts TCP connections on host:port."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def port_free(host: str, port: int) -> bool:
    """True when the port can be bound now: nothing listens, nothing is still closing.

    Stricter than `port_open`: a dying listener can leave a connect hanging (and so look
    closed) while its socket still holds the port."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for tests and ad-hoc environments)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_ready(url: str, headers: Mapping[str, str] | None = None) -> Callable[[], bool]:
    """A readiness probe: any HTTP answer below 500 at `url`."""

    def probe() -> bool:
        try:
            resp = httpx.get(url, headers=dict(headers or {}), timeout=1.0)
        except httpx.HTTPError:
            return False
        return resp.status_code < 500

    return probe


def pid_alive(pid: int) -> bool:
    """True for a live, non-zombie process."""
    child = _children.get(pid)
    if child is not None and child.poll() is not None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = proc_stat(pid)
    return fields is None or fields[STATE] != "Z"


def group_alive(pgid: int) -> bool:
    """True while any live, non-zombie process belongs to process group `pgid`."""
    stats = proc_stats()
    if stats is None:
        return pid_alive(pgid)
    return any(int(f[PGRP]) == pgid and f[STATE] != "Z" for f in stats)


# Indexes into `proc_stat`'s fields (proc(5) numbers them from 1, with the pid and the
# command name first: state is its field 3).
STATE, PGRP, FLAGS, UTIME, STARTTIME = 0, 2, 6, 11, 19


def proc_stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and
    parentheses); None when the process is gone or there is no /proc."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[-1].split()


def proc_stats() -> list[list[str]] | None:
    """`proc_stat` of every process now (those that exit meanwhile left out); None
    without /proc."""
    pids = [p.name for p in Path("/proc").glob("[0-9]*")]
    if not pids:
        return None
    return [fields for pid in pids if (fields := proc_stat(pid)) is not None]


class ProcessManager:
    """Starts, finds and stops the processes of one environment's state folder."""

    def __init__(self, state_dir: Path) -> None:
        self.run_dir = state_dir / "run"
        self.log_dir = state_dir / "logs"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def info(self, name: str) -> ProcessInfo:
        """What the PID file says, checked against the process table."""
        pid: int | None = None
        fingerprint: str | None = None
        try:
            data = json.loads(self.pid_file(name).read_text())
            pid, fingerprint = int(data["pid"]), data.get("fingerprint")
            command = str(data.get("command", ""))
            started = data.get("started")
            stop_timeout = float(data.get("stop_timeout", 15.0))
            ports = [(str(h), int(p)) for h, p in data.get("ports", [])]
        except (OSError, ValueError, KeyError, TypeError):
            command, started, stop_timeout, ports = "", None, 15.0, []
        live = pid is not None and pid_alive(pid)
        reused = live and pid is not None and not _runs(pid, command, started)
        return ProcessInfo(
            name,
            pid,
            live and not reused,
            fingerprint,
            self.log_file(name),
            stop_timeout,
            reused,
            ports,
        )

    def known(self) -> list[str]:
        """Names of every process with a PID file."""
        return sorted(p.stem for p in self.run_dir.glob("*.pid"))

    def start(self, spec: ProcessSpec, *, wait: bool = True) -> int:
        """Start `spec` in the background and (unless `wait` is False) wait until ready."""
        for host, port in spec.ports:
            if not port_free(host, port):
                raise PortInUse(
                    f"{spec.name}: port {port} on {host} is already in use by a process this"
                    " toolkit did not start; stop it, or choose another port in the"
                    " environment file"
                )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_file(spec.name)
        env = spec.environ()
        with log_path.open("ab") as log:
            log.write(f"\n--- start {time.strftime('%Y-%m-%d %H:%M:%S')} ---\n".encode())
            log.flush()
            try:
                child = subprocess.Popen(
                    list(spec.argv),
                    cwd=spec.cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ProcessError(f"{spec.name}: cannot run {spec.argv[0]}: {exc}") from None
        _children[child.pid] = child
        self.pid_file(spec.name).write_text(
            json.dumps(
                {
                    "pid": child.pid,
                    "fingerprint": spec.fingerprint(),
                    "command": spec.argv[0],
                    "started": _start_time(child.pid),
                    "stop_timeout": spec.stop_timeout,
                    "ports": [list(p) for p in spec.ports],
                }
            )
        )
        if wait:
            self.wait_ready(spec, child.pid)
        return child.pid

    def wait_ready(self, spec: ProcessSpec, pid: int) -> None:
        """Poll the readiness probe; fail fast when the process dies."""
        deadline = time.monotonic() + spec.ready_timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                self.pid_file(spec.name).unlink(missing_ok=True)
                raise ProcessError(
                    f"{spec.name} exited during start-up:\n{self.tail(spec.name)}",
                    log=self.log_file(spec.name),
                )
            if spec.ready():
                return
            time.sleep(0.1)
        self.stop(spec.name)
        raise ProcessError(
            f"{spec.name} was not ready within {spec.ready_timeout:g}s:\n{self.tail(spec.name)}",
            log=self.log_file(spec.name),
        )

    def stop(self, name: str, timeout: float | None = None) -> bool:
        """Stop a managed process and its whole group; True if its leader was running.

        A dead leader's orphans (still in its group) are stopped too; a PID that now
        belongs to another program is left alone."""
        info = self.info(name)
        self.pid_file(name).unlink(missing_ok=True)
        if info.pid is None or info.reused:
            return False
        if group_alive(info.pid):
            wait = info.stop_timeout if timeout is None else timeout
            _terminate_group(info.pid, wait, name)
        _reap(info.pid)
        # A SIGKILLed multi-threaded process can hold its sockets a moment after it is
        # gone: stopped means its ports are free again, so a restart finds them free.
        if not poll_until(lambda: all(port_free(h, p) for h, p in info.ports), PORT_RELEASE_S):
            raise ProcessError(
                f"{name}: its ports were still open {PORT_RELEASE_S:g}s after it stopped"
            )
        return info.alive

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int | None:
        """Send `sig` to a managed process (fault injection); keeps its PID file."""
        info = self.info(name)
        if info.pid is None or not info.alive:
            return None
        _signal_group(info.pid, sig)
        return info.pid

    def tail(self, name: str, lines: int = 15) -> str:
        """The last lines of a process's log, for error messages."""
        try:
            text = self.log_file(name).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text.splitlines()[-lines:])


def _start_time(pid: int) -> str | None:
    """When `pid` started, in clock ticks since boot (/proc/PID/stat field 22): with the
    PID it names one process for good, whatever later reuses the number."""
    fields = proc_stat(pid)
    return fields[STARTTIME] if fields is not None and len(fields) > STARTTIME else None


def _runs(pid: int, command: str, started: str | None) -> bool:
    """Guard against PID reuse: the process is the one we started (same start time where
    it was recorded) and still runs the command we started."""
    if started is not None:
        now = _start_time(pid)
        if now is not None and now != started:
            return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the PID file
    if not command or Path(command).name.encode() in cmdline:
        return True
    # A process in its exit drops its command line before it dies: still ours.
    return not cmdline and _exiting(pid)


def _exiting(pid: int) -> bool:
    """The kernel's PF_EXITING flag (0x4) in /proc/PID/stat."""
    fields = proc_stat(pid)
    return fields is not None and bool(int(fields[FLAGS]) & 0x4)


def _terminate_group(pgid: int, wait: float, name: str) -> None:
    """SIGTERM the group, SIGKILL what is left after `wait` seconds."""
    _signal_group(pgid, signal.SIGTERM)
    if poll_until(lambda: not group_alive(pgid), wait):
        return
    _signal_group(pgid, signal.SIGKILL)
    if not poll_until(lambda: not group_alive(pgid), 10.0):
        raise ProcessError(f"{name}: process group {pgid} survived SIGKILL")


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _reap(pid: int) -> None:
    child = _children.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=1)
