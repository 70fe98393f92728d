"""What version of the service runs: a short id over its sources and the settings that
change its behaviour, and an immutable copy of those sources per version.

Restate pins every invocation to the deployment it started on and replays its journal
against that deployment's code, so a version's code must never change under it: each
version runs from its own snapshot (`<state>/versions/<id>/service/`), which a restart
after a crash finds unchanged, whatever the working tree holds by then."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Deployment metadata keys the toolkit writes (and reads back to know its own versions).
META_VERSION = "nexus.version"
META_COMMIT = "nexus.commit"
META_ENV = "nexus.env"

VERSION_LENGTH = 10
SERVICE_PREFIX = "service-"
_INSTANCE = re.compile(rf"^{SERVICE_PREFIX}([0-9a-f]{{{VERSION_LENGTH}}})-(\d+|connect)$")


# Besides its Python sources, what a version is made of: its distribution's declaration
# and the lock of its exact dependencies (a changed pin is a new version).
BUILD_FILES = ("pyproject.toml", "requirements.lock")


def _source_files(package: Path) -> list[Path]:
    return sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)


def version_files(package: Path) -> list[Path]:
    """Every file a version id covers: the sources, the pyproject and the lock."""
    extra = [package / name for name in BUILD_FILES if (package / name).is_file()]
    return sorted([*_source_files(package), *extra])


def version_id(package: Path, settings: Mapping[str, str]) -> str:
    """A short, stable id of what a service version would run: every source file of
    `package`, its pyproject and lock (path and bytes; the lock pins the Restate SDK and
    every other dependency), and the settings it is given."""
    digest = hashlib.sha256()
    for file in version_files(package):
        digest.update(file.relative_to(package.parent).as_posix().encode() + b"\0")
        digest.update(file.read_bytes() + b"\0")
    for key, value in sorted(settings.items()):
        digest.update(f"{key}={value}\0".encode())
    return digest.hexdigest()[:VERSION_LENGTH]


def snapshot(package: Path, versions_dir: Path, version: str) -> Path:
    """Copy `package`'s sources into `versions_dir/<version>/` once; the folder to run
    from. An existing snapshot is kept as it is: it is what that version runs."""
    home = versions_dir / version
    if (home / package.name).is_dir():
        return home
    versions_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=versions_dir))
    try:
        for file in _source_files(package):
            target = staging / package.name / file.relative_to(package)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)
        staging.rename(home)  # atomic: a half-written snapshot is never run
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not (home / package.name).is_dir():
            raise
    return home


def remove_snapshot(versions_dir: Path, version: str) -> bool:
    """Delete a retired version's snapshot; True if there was one."""
    home = versions_dir / version
    if not home.is_dir():
        return False
    shutil.rmtree(home)
    return True


def git_commit(root: Path) -> str | None:
    """The checkout's commit (`+dirty` when the service's sources differ from it), or
    None outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "service"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


@dataclass(frozen=True, order=True)
class Instance:
    """One service process of one version, as named by its PID file:
    `service-<version>-<port>` (or `-connect` for a tunnel, which has no port)."""

    version: str
    port: int | None

    @property
    def name(self) -> str:
        return f"{SERVICE_PREFIX}{self.version}-{self.port if self.port is not None else 'connect'}"

    @classmethod
    def parse(cls, name: str) -> Instance | None:
        found = _INSTANCE.match(name)
        if found is None:
            return None
        port = found[2]
        return cls(found[1], None if port == "connect" else int(port))
