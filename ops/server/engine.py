"""A Docker engine and the stand-in restate-server image, for the docker runtime's tests
and CI on a machine without systemd or an image registry.

    python -m ops.server.engine up      an engine answering (installs docker.io, starts
                                        dockerd), the image built
    python -m ops.server.engine down    stops the dockerd that `up` started (by its PID)
    python -m ops.server.engine status  what answers, who started it, whether the image is
                                        there

`up` starts dockerd only when no engine answers, and records its PID in
`.nexus/engine/dockerd.pid`; `down` stops that process and no other. The image is a
`docker import` of a root filesystem holding the statically linked restate-server from
the pinned npm package, tagged `IMAGE` (never the official name)."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import TextIO

from ops.base import environments
from ops.base.docker_cli import docker, server_version
from ops.base.environments import PROJECT_ROOT, RESTATE_VERSION
from ops.base.errors import NexusError, RuntimeUnavailable
from ops.base.processes import ProcessManager
from ops.base.steps import StepContext
from ops.server.runtimes import BinaryRuntime

IMAGE = f"nexus-local/restate-server:{RESTATE_VERSION}"
STATE_DIR = PROJECT_ROOT / ".nexus" / "engine"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
# What `docker import` sets on the stand-in, as the official image has it.
IMAGE_CHANGES = (
    'ENTRYPOINT ["/usr/local/bin/restate-server"]',
    "WORKDIR /",
    "ENV RESTATE_BASE_DIR=/restate-data",
    "EXPOSE 8080",
    "EXPOSE 9070",
    "EXPOSE 5122",
)


def install_package(out: TextIO | None = None) -> None:
    """`apt-get install docker.io` (Debian's dockerd and its containerd, runc, iptables)."""
    if shutil.which("apt-get") is None:
        raise RuntimeUnavailable("no Docker engine and no apt-get to install docker.io with")
    if os.geteuid() != 0:
        raise RuntimeUnavailable("no Docker engine: installing docker.io needs root (apt-get)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "docker.io"],
    ):
        _say(out, "engine: " + " ".join(argv))
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            raise RuntimeUnavailable(f"`{' '.join(argv)}` failed:\n{proc.stderr[-2000:]}")


def pid_file(state: Path) -> Path:
    return state / "dockerd.pid"


def start_dockerd(state: Path) -> int:
    """dockerd in the background (own session, log in `state`); waits until it answers."""
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise RuntimeUnavailable("dockerd is not installed")
    state.mkdir(parents=True, exist_ok=True)
    log_path = state / "dockerd.log"
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            [dockerd],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file(state).write_text(json.dumps({"pid": child.pid, "started": _start_time(child.pid)}))
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if child.poll() is not None:
            pid_file(state).unlink(missing_ok=True)
            raise RuntimeUnavailable(f"dockerd exited with {child.returncode}:\n{_tail(log_path)}")
        if server_version(timeout=5) is not None:
            return child.pid
        time.sleep(0.3)
    raise RuntimeUnavailable(
        f"dockerd (pid {child.pid}) did not answer within {START_TIMEOUT:g}s:\n{_tail(log_path)}"
    )


def started_pid(state: Path) -> int | None:
    """The PID of the dockerd that `up` started, if that very process still runs."""
    try:
        record = json.loads(pid_file(state).read_text())
        pid = int(record["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if _start_time(pid) != record.get("started") or "dockerd" not in _command(pid):
        return None  # gone, or the PID now belongs to another process
    return pid


def stop_dockerd(state: Path) -> int | None:
    """SIGTERM the dockerd we started (it stops its containers and containerd), SIGKILL
    after STOP_TIMEOUT; the PID stopped, or None when we started none that still runs."""
    pid = started_pid(state)
    pid_file(state).unlink(missing_ok=True)
    if pid is None:
        return None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline and _start_time(pid) is not None:
        _reap(pid)
        time.sleep(0.2)
    if _start_time(pid) is not None:
        os.kill(pid, signal.SIGKILL)
        _reap(pid)
    return pid


def image_present(tag: str = IMAGE) -> bool:
    return docker("image", "inspect", "--format", "{{.Id}}", tag).returncode == 0


def rootfs(binary: Path) -> bytes:
    """A tarball of the stand-in's root filesystem: the binary, CA roots, users, dirs."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode in (("tmp", 0o1777), ("restate-data", 0o777), ("etc", 0o755)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        for name, text in (
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/sbin/nologin\n"
                "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n",
            ),
            ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        tar.add(binary, "usr/local/bin/restate-server")
        if CA_BUNDLE.is_file():
            tar.add(CA_BUNDLE.resolve(), "etc/ssl/certs/ca-certificates.crt")
    return buffer.getvalue()


def build_image(binary: Path, tag: str = IMAGE) -> str:
    """`docker import` the root filesystem under `tag`; the new image's id."""
    if not binary.is_file():
        raise RuntimeUnavailable(f"restate-server binary not found at {binary}")
    changes = [arg for change in IMAGE_CHANGES for arg in ("--change", change)]
    proc = docker("import", *changes, "-", tag, stdin=rootfs(binary), timeout=300)
    if proc.returncode != 0:
        raise NexusError(f"docker import of {tag} failed: {proc.stderr.strip()[-1000:]}")
    return proc.stdout.strip()


def restate_binary() -> Path:
    """The pinned restate-server from npm, installed into `.nexus/npm/` if missing."""
    env = environments.load("docker")
    runtime = BinaryRuntime(env, ProcessManager(env.state_dir))
    runtime.install(StepContext())
    return runtime.binary


def up(state: Path = STATE_DIR, out: TextIO | None = None) -> None:
    """Engine answering and image present, doing only what is missing."""
    started = time.monotonic()
    version = server_version()
    if version is not None:
        _say(out, f"engine: Docker {version} answers")
    else:
        if shutil.which("dockerd") is None:
            install_package(out)
        pid = start_dockerd(state)
        version = server_version() or "?"
        _say(out, f"engine: started dockerd {version} (pid {pid}, log {state / 'dockerd.log'})")
    if image_present():
        _say(out, f"image: {IMAGE} present")
    else:
        image_id = build_image(restate_binary())
        _say(out, f"image: built {IMAGE} ({image_id[:19]})")
    _say(out, f"engine up in {time.monotonic() - started:.1f}s")


def remove_containers_under(folder: Path) -> list[str]:
    """Remove the toolkit's containers whose state folder lies under `folder` (what a
    killed test run left behind); their names."""
    listing = docker(
        "ps",
        "--all",
        "--filter",
        "label=nexus.state",
        "--format",
        '{{.Names}}\t{{.Label "nexus.state"}}',
    )
    removed = []
    root = folder.resolve()
    for line in listing.stdout.splitlines():
        name, _, state = line.partition("\t")
        if state and Path(state).is_relative_to(root):
            docker("rm", "--force", name)
            removed.append(name)
    return removed


def down(
    state: Path = STATE_DIR, containers_under: Path | None = None, out: TextIO | None = None
) -> None:
    """Remove leftover containers under `containers_under`, then stop our dockerd."""
    if containers_under is not None and server_version() is not None:
        for name in remove_containers_under(containers_under):
            _say(out, f"engine: removed leftover container {name}")
    pid = stop_dockerd(state)
    _say(out, f"engine: stopped dockerd (pid {pid})" if pid else "engine: no dockerd of ours runs")


def status(state: Path = STATE_DIR) -> list[str]:
    version = server_version()
    pid = started_pid(state)
    owner = (
        f"started by ops.server.engine (pid {pid})" if pid else "not started by ops.server.engine"
    )
    lines = [f"engine  {'Docker ' + version if version else 'not answering'}  {owner}"]
    if version:
        lines.append(f"image   {IMAGE} {'present' if image_present() else 'missing'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ops.server.engine", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("action", choices=("up", "down", "status"))
    parser.add_argument(
        "--state", type=Path, default=STATE_DIR, help="where the PID file and log live"
    )
    parser.add_argument(
        "--remove-containers-under",
        type=Path,
        default=None,
        help="down: first remove the toolkit's containers whose state folder is under this one",
    )
    args = parser.parse_args(argv)
    out = sys.stdout
    try:
        if args.action == "up":
            up(args.state, out)
        elif args.action == "down":
            down(args.state, args.remove_containers_under, out)
        else:
            print("\n".join(status(args.state)))
    except NexusError as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return 1
    return 0


def _say(out: TextIO | None, line: str) -> None:
    if out is not None:
        print(line, file=out, flush=True)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time): tells a PID's process from a later one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else None


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


if __name__ == "__main__":
    sys.exit(main())
