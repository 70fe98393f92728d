"""Images without a registry: a Python base made from Debian's own packages, the
service's image per version (from its wheel, lock and a wheelhouse made on the host, so
`docker build --network none` works), and pushing it to a registry.

The base is `mmdebstrap --variant=minbase` of bookworm with python3, python3-venv and CA
roots, `docker import`ed as `BASE_IMAGE` (a name of our own, never an official one)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from ops.base.docker_cli import docker, server_version
from ops.base.errors import NexusError, RuntimeUnavailable
from ops.release.artefacts import LOCK, Artefact, Artefacts
from ops.release.granian import GRANIAN

BASE_IMAGE = "nexus-local/python:3.11-bookworm"
SERVICE_IMAGE = "nexus-booking-service"
SUITE = "bookworm"
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
LABEL_VERSION = "org.opencontainers.image.version"
LABEL_REVISION = "org.opencontainers.image.revision"
LABEL_TITLE = "org.opencontainers.image.title"
LABEL_SDK = "dev.nexus.restate-sdk.version"
VENV = "/opt/nexus"
PORT = 9080
DOCKERFILE = """\
# The Nexus booking service, version {version}: its wheel and locked dependencies in
# {venv}, served by granian over HTTP/2 (h2c). Built with --network none from a
# wheelhouse made on the host; nothing is fetched here.
FROM {base}
COPY wheels/ /tmp/wheels/
COPY {lock} {wheel} /tmp/
RUN python3 -m venv {venv} \\
 && {venv}/bin/pip install --no-cache-dir --no-index --disable-pip-version-check \\
      --require-hashes --find-links /tmp/wheels -r /tmp/{lock} \\
 && {venv}/bin/pip install --no-cache-dir --no-index --no-deps --disable-pip-version-check \\
      /tmp/{wheel} \\
 && {venv}/bin/pip uninstall --yes --quiet pip setuptools \\
 && rm -rf /tmp/wheels /tmp/{lock} /tmp/{wheel} \\
 && {venv}/bin/python -I -c "import service.app"
LABEL {labels}
EXPOSE {port}
ENTRYPOINT [{entrypoint}]
CMD ["--host", "0.0.0.0", "--port", "{port}", "service.app:app"]
"""


class ImageError(NexusError):
    """An image could not be built, found or pushed."""


def image_tag(version: str) -> str:
    return f"{SERVICE_IMAGE}:{version}"


def image_id(ref: str) -> str | None:
    """The id of a local image, or None when the engine does not hold it."""
    proc = docker("image", "inspect", "--format", "{{.Id}}", ref)
    return proc.stdout.strip() if proc.returncode == 0 else None


def image_labels(ref: str) -> dict[str, str]:
    proc = docker("image", "inspect", "--format", "{{json .Config.Labels}}", ref)
    if proc.returncode != 0:
        return {}
    found = json.loads(proc.stdout or "null")
    return {str(k): str(v) for k, v in (found or {}).items()}


def image_size_mb(ref: str) -> float:
    proc = docker("image", "inspect", "--format", "{{.Size}}", ref)
    return int(proc.stdout.strip() or 0) / 1e6 if proc.returncode == 0 else 0.0


def require_engine(what: str) -> str:
    """The engine's version, or a clear error naming what needed it."""
    if shutil.which("docker") is None:
        raise RuntimeUnavailable(f"{what} needs Docker, and no docker client is on PATH")
    version = server_version()
    if version is None:
        raise RuntimeUnavailable(
            f"{what} needs a Docker engine and none answers (`docker version`):"
            " `python -m ops.server.engine up` starts one"
        )
    return version


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt sources name (deb822 or one-line form)."""
    for file in sorted(sources.glob("sources.list.d/*.sources")):
        for uri in re.findall(r"^URIs:\s*(\S+)", file.read_text(), re.MULTILINE):
            if "security" not in uri:
                return str(uri).rstrip("/")
    listing = sources / "sources.list"
    if listing.is_file():
        for line in listing.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and "security" not in parts[1]:
                return parts[1].rstrip("/")
    return DEFAULT_MIRROR


def _install_mmdebstrap() -> str:
    found = shutil.which("mmdebstrap")
    if found:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        raise ImageError(
            f"no Python base image ({BASE_IMAGE}) and no mmdebstrap to build one:"
            " `apt-get install mmdebstrap` (as root), or `docker load` a base and tag it"
            f" {BASE_IMAGE}"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "mmdebstrap"],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0:
            raise ImageError(f"{' '.join(argv)} failed:\n{proc.stderr[-1500:]}")
    return shutil.which("mmdebstrap") or "mmdebstrap"


def build_base(tag: str = BASE_IMAGE, mirror: str | None = None) -> str:
    """mmdebstrap a minimal bookworm with Python into a tarball and `docker import` it;
    the new image's id."""
    tool = _install_mmdebstrap()
    with tempfile.TemporaryDirectory(prefix="nexus-base-") as work:
        tarball = Path(work) / "base.tar"
        argv = [
            tool, "--quiet", "--variant=minbase", f"--include={BASE_PACKAGES}",
            SUITE, str(tarball), mirror or debian_mirror(),
        ]  # fmt: skip
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
        if proc.returncode != 0:
            raise ImageError(f"mmdebstrap failed:\n{(proc.stderr or proc.stdout)[-2000:]}")
        imported = docker("import", "--change", 'CMD ["python3"]', str(tarball), tag, timeout=600)
        if imported.returncode != 0:
            raise ImageError(f"docker import of the base failed:\n{imported.stderr[-1500:]}")
    found = image_id(tag)
    if found is None:
        raise ImageError(f"docker import reported success but {tag} is not on the engine")
    return found


def entrypoint() -> list[str]:
    return [f"{VENV}/bin/python", "-m", "granian", *GRANIAN]


def write_context(artefacts: Artefacts, artefact: Artefact, folder: Path, base: str) -> None:
    """The build context: Dockerfile, the wheel, the lock and the lock's wheels (for the
    base's Python 3.11 on manylinux x86_64, whatever this host runs)."""
    wheelhouse = artefacts.wheelhouse(artefact.lock, python="3.11")
    meta = artefact.manifest()
    labels = {
        LABEL_TITLE: SERVICE_IMAGE,
        LABEL_VERSION: artefact.version,
        LABEL_REVISION: str(meta.get("commit") or "unknown"),
        LABEL_SDK: str(meta.get("restate_sdk") or "unknown"),
    }
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "wheels").mkdir(parents=True)
    for wheel in wheelhouse.glob("*.whl"):
        shutil.copy2(wheel, folder / "wheels" / wheel.name)
    shutil.copy2(artefact.wheel, folder / artefact.wheel.name)
    shutil.copy2(artefact.lock, folder / LOCK)
    quoted = ", ".join(f'"{part}"' for part in entrypoint())
    (folder / "Dockerfile").write_text(
        DOCKERFILE.format(
            version=artefact.version,
            venv=VENV,
            base=base,
            lock=LOCK,
            wheel=artefact.wheel.name,
            labels=" \\\n      ".join(f'{k}="{v}"' for k, v in labels.items()),
            port=PORT,
            entrypoint=quoted,
        )
    )


def build_service_image(
    artefacts: Artefacts, artefact: Artefact, base: str = BASE_IMAGE
) -> tuple[str, float]:
    """`docker build --network none` of the version's image; its id and seconds taken."""
    started = time.monotonic()
    folder = artefact.home / "image"
    write_context(artefacts, artefact, folder, base)
    tag = image_tag(artefact.version)
    proc = docker("build", "--network", "none", "--pull=false", "-t", tag, str(folder), timeout=900)
    shutil.rmtree(folder, ignore_errors=True)
    if proc.returncode != 0:
        raise ImageError(
            f"docker build of version {artefact.version} failed:\n"
            f"{(proc.stderr or proc.stdout)[-2000:]}"
        )
    found = image_id(tag)
    if found is None:
        raise ImageError(f"docker build reported success but {tag} is not on the engine")
    return found, time.monotonic() - started


def push(version: str, registry: str) -> tuple[str, bool]:
    """Tag the version's image as `<registry>/nexus-booking-service:<id>` and push it:
    the pushed reference, and whether any layer was uploaded (False: the registry had
    them all). A refusal names the registry and what it said, and leaves no tag."""
    registry = registry.rstrip("/")
    if not re.fullmatch(r"[A-Za-z0-9.\-]+(:\d+)?(/[a-z0-9._\-/]+)?", registry):
        raise ImageError(f"--push {registry!r} is not a registry address (host[:port][/path])")
    local = image_tag(version)
    if image_id(local) is None:
        raise ImageError(f"image {local} is not built: `invoke build --env ENV` makes it")
    remote = f"{registry}/{local}"
    tagged = docker("tag", local, remote)
    if tagged.returncode != 0:
        raise ImageError(f"docker tag {local} {remote} failed: {tagged.stderr.strip()}")
    proc = docker("push", remote, timeout=900)
    if proc.returncode != 0:
        docker("rmi", remote)  # leave no tag behind for a push that did not happen
        said = (proc.stderr or proc.stdout).strip().splitlines()
        raise ImageError(
            f"registry {registry} refused the push of version {version}:"
            f" {said[-1] if said else 'no answer'}"
        )
    return remote, ": Pushed" in proc.stdout


def pushed_digest(remote: str) -> str | None:
    """The registry's digest of a pushed reference (as the engine recorded it)."""
    proc = docker("image", "inspect", "--format", '{{join .RepoDigests " "}}', remote)
    if proc.returncode != 0:
        return None
    name = remote.rsplit(":", 1)[0]
    for digest in proc.stdout.split():
        if digest.startswith(name + "@"):
            return digest.split("@", 1)[1]
    return None
