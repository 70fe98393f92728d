"""`invoke build`: a real wheel and container context; the image only with an engine."""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from ops.build import Build
from ops.environments import PROJECT_ROOT
from ops.steps import Status, StepContext


def test_wheel_and_container_context(tmp_path: Path) -> None:
    build = Build(PROJECT_ROOT)
    assert build.wheel_step(StepContext()).status is Status.CHANGED
    wheel = build.wheels()[-1]
    names = zipfile.ZipFile(wheel).namelist()
    assert "service/app.py" in names and "ops/stack.py" in names
    assert build.context_step(StepContext()).status is Status.CHANGED
    dockerfile = (build.context / "Dockerfile").read_text()
    assert f"COPY {wheel.name}" in dockerfile and "service.app:app" in dockerfile
    assert (build.context / wheel.name).read_bytes() == wheel.read_bytes()
    assert build.context_step(StepContext()).status is Status.OK  # idempotent


def test_image_is_skipped_without_a_docker_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    result = Build(PROJECT_ROOT).image_step(StepContext())
    assert result.status is Status.SKIPPED and "no Docker engine" in result.message
