"""A service version as an artefact: the wheel, the lock and (on Docker) the image that
every runtime runs, built once per version id and never from the toolkit's own venv.

    dist/versions/<id>/
        nexus_booking_service-0.1.0+v<id>-py3-none-any.whl   the service, version id inside
        requirements.lock                                     its exact dependencies, hashed
        artefact.json                                         id, commit, SDK, checksums
    dist/wheelhouse/<lock digest>-<python tag>/               the lock's wheels, verified

The lock (`service/requirements.lock`) is made by uv from `service/pyproject.toml` and
committed; the version id covers it, so a changed pin is a new version. A process runtime
makes each version's virtualenv from the wheel and the lock (`make_venv`); the Docker
runtime builds an image from the same files (`ops.release.images`)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.base.errors import NexusError
from ops.base.files import sha256

DISTRIBUTION = "nexus-booking-service"
LOCK = "requirements.lock"
PYPROJECT = "pyproject.toml"
MANIFEST = "artefact.json"
VENV_MANIFEST = "nexus-artefact.json"
LOCK_PYTHON = "3.11"  # the base image's Python (Debian bookworm); the lock is made for it
LOCK_PLATFORM = "x86_64-manylinux_2_28"
_INPUTS = re.compile(r"^# nexus-lock-inputs: ([0-9a-f]{16})$", re.MULTILINE)
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==([^\s;\\]+)", re.MULTILINE)
TIMEOUT_S = 900


class ArtefactError(NexusError):
    """A wheel, lock, wheelhouse or virtualenv could not be made."""


def uv() -> list[str]:
    """The uv binary shipped in the toolkit's venv (PyPI `uv`), as an argv prefix."""
    return [sys.executable, "-m", "uv"]


def _run(argv: list[str], what: str, timeout: float = TIMEOUT_S) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ArtefactError(f"{what}: timed out after {timeout:.0f}s") from None
    except OSError as exc:
        raise ArtefactError(f"{what}: {exc}") from None
    if proc.returncode != 0:
        raise ArtefactError(f"{what} failed:\n{(proc.stderr or proc.stdout)[-2000:]}")
    return proc.stdout


def lock_inputs(package: Path) -> str:
    """A digest of what the lock is made from: the service's declared dependencies."""
    try:
        project = tomllib.loads((package / PYPROJECT).read_text())["project"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as exc:
        raise ArtefactError(f"{package / PYPROJECT} is not a readable project: {exc}") from None
    wanted = {
        "dependencies": sorted(project.get("dependencies", [])),
        "requires-python": project.get("requires-python", ""),
        "python": LOCK_PYTHON,
        "platform": LOCK_PLATFORM,
    }
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:16]


def lock_is_current(package: Path) -> bool:
    """The committed lock was made from today's declared dependencies."""
    try:
        text = (package / LOCK).read_text()
    except OSError:
        return False
    found = _INPUTS.search(text)
    return found is not None and found[1] == lock_inputs(package)


def make_lock(package: Path, upgrade: bool = False) -> Path:
    """`uv pip compile` the service's dependencies into `requirements.lock`, with hashes
    (for the base image's Python and platform, whatever this host runs)."""
    lock = package / LOCK
    argv = [
        *uv(),
        "pip",
        "compile",
        str(package / PYPROJECT),
        "--generate-hashes",
        "--python-version",
        LOCK_PYTHON,
        "--python-platform",
        LOCK_PLATFORM,
        "--no-header",
    ]
    if upgrade:
        argv.append("--upgrade")
    elif lock.is_file():
        argv += ["--constraints", str(lock)]  # keep today's pins where they still fit
    body = _run(argv, f"uv pip compile {package / PYPROJECT}")
    if not _PIN.search(body):
        raise ArtefactError(f"uv pip compile {package / PYPROJECT} pinned nothing")
    header = (
        f"# The service's exact dependencies, made by `invoke build` with uv from {PYPROJECT}"
        f" (Python {LOCK_PYTHON}, {LOCK_PLATFORM}).\n"
        f"# nexus-lock-inputs: {lock_inputs(package)}\n"
    )
    lock.write_text(header + body)
    return lock


def pins(lock: Path) -> dict[str, str]:
    """name → version of every package the lock pins."""
    return {m[1].lower(): m[2] for m in _PIN.finditer(lock.read_text())}


def base_version(package: Path) -> str:
    return str(tomllib.loads((package / PYPROJECT).read_text())["project"]["version"])


@dataclass(frozen=True)
class Artefact:
    """One version's built files under `dist/versions/<id>/`."""

    version: str
    home: Path

    @property
    def lock(self) -> Path:
        return self.home / LOCK

    @property
    def manifest_file(self) -> Path:
        return self.home / MANIFEST

    @property
    def wheel(self) -> Path:
        found = sorted(self.home.glob("nexus_booking_service-*.whl"))
        return found[-1] if found else self.home / "missing.whl"

    def manifest(self) -> dict[str, Any]:
        try:
            data = json.loads(self.manifest_file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def present(self) -> bool:
        """Wheel and lock are there and match the checksums the manifest records."""
        meta = self.manifest()
        return (
            bool(meta)
            and self.wheel.is_file()
            and self.lock.is_file()
            and meta.get("wheel_sha256") == sha256(self.wheel)
            and meta.get("lock_sha256") == sha256(self.lock)
        )

    def describe(self) -> str:
        return f"{self.wheel.name} + {LOCK} in {self.home}"


class Artefacts:
    """Building and reading versions' artefacts for one project folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dist = root / "dist"
        self.versions = self.dist / "versions"
        self.wheelhouses = self.dist / "wheelhouse"

    def artefact(self, version: str) -> Artefact:
        return Artefact(version, self.versions / version)

    def build(self, package: Path, version: str, meta: dict[str, str]) -> Artefact:
        """Build the version's wheel (`<base>+v<id>`) from `package` and store it with a
        copy of the lock; atomic: a half-built artefact is never found."""
        if not lock_is_current(package):
            raise ArtefactError(
                f"{package / LOCK} is missing or older than {package / PYPROJECT}'s"
                " dependencies: run `invoke build` (it re-locks) before deploying"
            )
        target = self.artefact(version)
        self.versions.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{version}-", dir=self.versions))
        try:
            source = work / "src"
            _stage(package, source, f"{base_version(package)}+v{version}")
            out = work / "out"
            _run(
                [*uv(), "build", "--wheel", "--quiet", "-o", str(out), str(source)],
                f"building the wheel of version {version} from {package}",
            )
            wheels = list(out.glob("*.whl"))
            if len(wheels) != 1:
                raise ArtefactError(f"uv build of version {version} made {len(wheels)} wheels")
            _check_imports(wheels[0], version)
            home = work / "home"
            home.mkdir()
            wheel = home / wheels[0].name
            shutil.move(wheels[0], wheel)
            shutil.copy2(package / LOCK, home / LOCK)
            manifest = {
                "version": version,
                "distribution": DISTRIBUTION,
                "wheel": wheel.name,
                "wheel_sha256": sha256(wheel),
                "lock_sha256": sha256(home / LOCK),
                "restate_sdk": pins(home / LOCK).get("restate-sdk", "unknown"),
                **meta,
            }
            (home / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
            self.make_venv(Artefact(version, home), work / "check-venv")  # it must import
            if target.home.exists():
                shutil.rmtree(target.home)
            home.rename(target.home)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return target

    def wheelhouse(self, lock: Path, python: str | None = None) -> Path:
        """The lock's wheels, downloaded (hashes checked) into a folder of their own:
        for this host's Python, or for `python` ("3.11") on manylinux x86_64."""
        tag = python or f"{sys.version_info.major}.{sys.version_info.minor}"
        folder = self.wheelhouses / f"{sha256(lock)[:16]}-cp{tag.replace('.', '')}"
        done = folder / ".complete"
        if done.is_file():
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
            "--require-hashes", "--no-deps", "--only-binary=:all:", "-r", str(lock),
            "-d", str(folder),
        ]  # fmt: skip
        if python is not None:
            argv += ["--python-version", python, "--platform", "manylinux_2_28_x86_64"]
            argv += ["--platform", "manylinux2014_x86_64", "--platform", "linux_x86_64"]
            argv += ["--implementation", "cp"]
        _run(argv, f"downloading the wheels {lock} names")
        done.write_text("")
        return folder

    def make_venv(self, artefact: Artefact, target: Path) -> Path:
        """A virtualenv at `target` holding exactly the artefact's wheel and its locked
        dependencies (from the wheelhouse, hashes required, no index). Made beside its
        place and renamed into it, so a half-made venv is never run."""
        if not artefact.present():
            raise ArtefactError(f"artefact of version {artefact.version} missing or altered")
        wheelhouse = self.wheelhouse(artefact.lock)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".venv-", dir=target.parent))
        try:
            python = _base_python()
            _run([*uv(), "venv", "--quiet", "--python", python, str(staging)], "uv venv")
            py = str(staging / "bin" / "python")
            common = ["--python", py, "--no-index", "--link-mode", "copy", "--quiet"]
            _run(
                [*uv(), "pip", "install", *common, "--require-hashes", "--find-links",
                 str(wheelhouse), "-r", str(artefact.lock)],
                f"installing version {artefact.version}'s locked dependencies",
            )  # fmt: skip
            _run(
                [*uv(), "pip", "install", *common, "--no-deps", str(artefact.wheel)],
                f"installing {artefact.wheel.name}",
            )
            _run(
                [py, "-I", "-c", "import service.app"],
                f"importing service.app in version {artefact.version}'s own virtualenv",
                timeout=120,
            )
            record = {**artefact.manifest(), "python": python}
            (staging / VENV_MANIFEST).write_text(json.dumps(record, indent=2) + "\n")
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return target


def venv_matches(venv: Path, artefact: Artefact) -> bool:
    """`venv` was made from this artefact (same wheel and lock checksums)."""
    try:
        record = json.loads((venv / VENV_MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    meta = artefact.manifest()
    return (
        (venv / "bin" / "python").exists()
        and bool(meta)
        and record.get("wheel_sha256") == meta.get("wheel_sha256")
        and record.get("lock_sha256") == meta.get("lock_sha256")
    )


def venv_versions(venv: Path) -> dict[str, str]:
    """name → version of what a venv holds (read from its dist-info folders)."""
    found: dict[str, str] = {}
    for info in venv.glob("lib/python*/site-packages/*.dist-info"):
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        found[name.lower().replace("_", "-")] = version
    return found


def _base_python() -> str:
    """The interpreter the toolkit's venv was made from (never the venv itself)."""
    major, minor = sys.version_info[:2]
    for candidate in (
        Path(sys.base_prefix) / "bin" / f"python{major}.{minor}",
        Path(sys.base_prefix) / "bin" / "python3",
    ):
        if candidate.exists():
            return str(candidate)
    return str(Path(getattr(sys, "_base_executable", sys.executable)))


def _stage(package: Path, target: Path, version: str) -> None:
    """The service's sources, pyproject (with `version` written in) and lock, alone in
    `target`: what the wheel is built from, whatever else lies in `package`."""
    target.mkdir(parents=True)
    for file in sorted(package.glob("*.py")):
        shutil.copy2(file, target / file.name)
    shutil.copy2(package / LOCK, target / LOCK)
    text = (package / PYPROJECT).read_text()
    stamped, count = re.subn(
        r'^version = "[^"]*"$', f'version = "{version}"', text, count=1, flags=re.MULTILINE
    )
    if count != 1:
        raise ArtefactError(f'{package / PYPROJECT} has no `version = "..."` line to stamp')
    (target / PYPROJECT).write_text(stamped)


def _check_imports(wheel: Path, version: str) -> None:
    """The wheel holds the app module: a service that does not build never ships."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    if "service/app.py" not in names:
        raise ArtefactError(f"the wheel of version {version} holds no service/app.py")
