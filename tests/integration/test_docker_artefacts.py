"""Versions as images on a real engine: a base made from Debian's packages, the service
image built once per version and holding no tooling, pushed to and pulled from a real
registry on loopback (Debian's docker-registry), and a push the registry refuses."""

from __future__ import annotations

import io
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.base.docker_cli import docker
from ops.base.errors import NexusError
from ops.base.processes import free_port, poll_until, port_open
from ops.base.steps import Play, Status, StepContext
from ops.release.build import Build
from ops.release.images import (
    LABEL_REVISION,
    LABEL_SDK,
    LABEL_VERSION,
    VENV,
    build_base,
    image_id,
    image_labels,
    image_tag,
)
from ops.release.stack import Stack
from tests.integration.test_docker import DockerEnv, deployed, docker_env, engine, recap

pytestmark = pytest.mark.integration
__all__ = ["docker_env", "engine"]  # fixtures, used by name
TOOLING = ("invoke", "k6", "pytest", "mypy", "ruff")


def build(env: object, **kwargs: str) -> Play:
    play = Play("build", StepContext(), out=io.StringIO())
    for name, step in Build(env, **kwargs).steps():  # type: ignore[arg-type]
        play.run(name, step)
    return play


def test_a_python_base_from_debian_packages_alone(engine: str) -> None:
    """From nothing: mmdebstrap + docker import, under a throwaway tag of our own."""
    tag = f"nexus-local/python:test-{uuid.uuid4().hex[:8]}"
    try:
        build_base(tag)
        run = docker("run", "--rm", tag, "python3", "-c", "import sys, venv; print(sys.version)")
        assert run.returncode == 0 and run.stdout.startswith("3.11."), run.stderr
    finally:
        docker("rmi", "-f", tag)


def test_build_once_deploy_that_image_and_build_again_changes_nothing(
    docker_env: DockerEnv,
) -> None:
    env = docker_env("art")
    first = build(env)
    assert not first.failed, first.out.getvalue()  # type: ignore[attr-defined]
    version = Stack(env).version
    tag = image_tag(version)
    built = image_id(tag)
    assert built is not None
    again = build(env)
    statuses = {r.step: r.status for r in again.results}
    assert statuses == {
        "lock": Status.OK,
        "wheel": Status.OK,
        "image": Status.OK,
        "push": Status.SKIPPED,
    }, again.out.getvalue()  # type: ignore[attr-defined]
    assert image_id(tag) == built

    labels = image_labels(tag)
    assert labels[LABEL_VERSION] == version and labels[LABEL_SDK] == "1.3.0"
    assert labels[LABEL_REVISION]
    probe = "import importlib.util as u, sys; print([m for m in sys.argv[1:] if u.find_spec(m)])"
    inside = docker("run", "--rm", "--entrypoint", f"{VENV}/bin/python", tag, "-c", probe, *TOOLING)
    assert inside.returncode == 0 and inside.stdout.strip() == "[]", inside.stdout + inside.stderr

    out = deployed(env)  # deploy finds the artefact it would have built
    assert f"version {version}: " in out and "present" in out
    assert "changed=0" in recap(deployed(env))
    rows = Stack(env).release.status()
    assert rows[0]["image"] == tag and rows[0]["container"], rows
    python = docker("inspect", "--format", "{{.Config.Image}}", str(rows[0]["container"]))
    assert python.stdout.strip() == tag


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two real registries on loopback: one that takes pushes, one read-only."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is not installed (.ci/run installs it with apt-get)")
    procs: list[subprocess.Popen[bytes]] = []
    addresses: list[str] = []
    for readonly in ("false", "true"):
        port = free_port()
        config = tmp_path / f"registry-{readonly}.yml"
        config.write_text(
            "version: 0.1\n"
            f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / ('data-' + readonly)}\n"
            f"  maintenance:\n    readonly:\n      enabled: {readonly}\n"
            f"http:\n  addr: 127.0.0.1:{port}\n"
        )
        log = (tmp_path / f"registry-{readonly}.log").open("wb")
        procs.append(subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=log))
        assert poll_until(lambda p=port: port_open("127.0.0.1", p), 15.0), "registry down"
        addresses.append(f"127.0.0.1:{port}")
    yield addresses[0], addresses[1]
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def test_push_and_pull_through_a_loopback_registry_and_a_refused_push(
    docker_env: DockerEnv, registry: tuple[str, str]
) -> None:
    writable, readonly = registry
    env = docker_env("push")
    pushed = build(env, push_to=writable)
    assert not pushed.failed, pushed.out.getvalue()  # type: ignore[attr-defined]
    push = {r.step: r for r in pushed.results}["push"]
    assert push.status is Status.CHANGED, push.message
    remote = f"{writable}/{image_tag(Stack(env).version)}"
    again = {r.step: r for r in build(env, push_to=writable).results}["push"]
    assert again.status is Status.OK and "every layer already" in again.message

    local = image_id(image_tag(Stack(env).version))
    assert docker("rmi", remote).returncode == 0
    pulled = docker("pull", remote, timeout=300)
    assert pulled.returncode == 0, pulled.stderr
    assert image_id(remote) == local  # the very image that was built

    refused = build(env, push_to=readonly)
    result = {r.step: r for r in refused.results}["push"]
    assert result.status is Status.FAILED
    assert f"registry {readonly} refused the push of version {Stack(env).version}" in (
        result.message
    )
    assert image_id(f"{readonly}/{image_tag(Stack(env).version)}") is None  # no tag left
    with pytest.raises(NexusError, match="is not a registry address"):
        Build(env, push_to="http://not a registry").push_step(StepContext())
    docker("rmi", remote)
