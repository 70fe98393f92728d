"""The docker client, as the toolkit calls it: one command at a time, a missing client or
a hang turned into `RuntimeUnavailable`. Used by the docker runtime, the build and
`ops.server.engine`."""

from __future__ import annotations

import shutil
import subprocess

from ops.base.errors import RuntimeUnavailable


def docker(
    *args: str, timeout: float = 60.0, stdin: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the docker client; a missing client or a hang becomes a RuntimeUnavailable."""
    client = shutil.which("docker")
    if client is None:
        raise RuntimeUnavailable("no docker client on PATH")
    try:
        proc = subprocess.run(
            [client, *args],
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise RuntimeUnavailable(f"`docker {args[0]}` did not answer within {timeout:g}s") from None
    return subprocess.CompletedProcess(
        proc.args,
        proc.returncode,
        proc.stdout.decode(errors="replace"),
        proc.stderr.decode(errors="replace"),
    )


def server_version(timeout: float = 10.0) -> str | None:
    """The engine's version (`docker version`, which podman's CLI also answers), or None."""
    try:
        proc = docker("version", "--format", "{{.Server.Version}}", timeout=timeout)
    except RuntimeUnavailable:
        return None
    version = proc.stdout.strip()
    return version if proc.returncode == 0 and version else None
