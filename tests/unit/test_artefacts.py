"""Artefacts as data: what the version id covers, when the lock is stale, what a missing
artefact says, where the Debian mirror comes from. No server, no engine."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ops.base.environments import PROJECT_ROOT
from ops.release.artefacts import LOCK, ArtefactError, Artefacts, lock_inputs, lock_is_current, pins
from ops.release.images import debian_mirror
from ops.release.stack import Stack
from ops.release.versions import Instance, version_id
from tests.unit.test_chaos import LOCAL, env_from


def package_copy(tmp_path: Path) -> Path:
    target = tmp_path / "service"
    shutil.copytree(
        PROJECT_ROOT / "service", target, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    return target


def test_the_committed_lock_is_current_and_pins_the_service_alone() -> None:
    package = PROJECT_ROOT / "service"
    assert lock_is_current(package)
    locked = pins(package / LOCK)
    assert locked["restate-sdk"] == "1.3.0"
    assert not {"invoke", "k6", "pytest", "mypy", "ruff", "httpx"} & set(locked)


def test_a_changed_pin_or_dependency_is_a_new_version_and_a_stale_lock(tmp_path: Path) -> None:
    package = package_copy(tmp_path)
    settings = {"NEXUS_HOLD_SECONDS": "900"}
    before = version_id(package, settings)
    lock = package / LOCK
    lock.write_text(lock.read_text().replace("yarl==", "yarl==0.0.0.", 1))
    assert version_id(package, settings) != before  # a changed pin: a new version
    assert lock_is_current(package)  # the declared dependencies did not change
    pyproject = package / "pyproject.toml"
    inputs = lock_inputs(package)
    pyproject.write_text(pyproject.read_text().replace('"uvloop>=0.19",', '"uvloop>=0.20",'))
    assert lock_inputs(package) != inputs and not lock_is_current(package)
    with pytest.raises(ArtefactError, match=r"invoke build. \(it re-locks\)"):
        Artefacts(tmp_path).build(package, "0123456789", {})
    assert not (tmp_path / "dist" / "versions" / "0123456789").exists()


def test_an_absent_or_altered_artefact_is_not_present(tmp_path: Path) -> None:
    artefact = Artefacts(tmp_path).artefact("0123456789")
    assert not artefact.present()
    artefact.home.mkdir(parents=True)
    (artefact.home / "nexus_booking_service-0.1.0+v0123456789-py3-none-any.whl").write_text("w")
    (artefact.home / LOCK).write_text("l")
    (artefact.home / "artefact.json").write_text('{"wheel_sha256": "0", "lock_sha256": "0"}')
    assert not artefact.present()  # the checksums do not match what is there


def test_a_draining_version_without_its_artefact_names_the_version_and_what_to_run(
    tmp_path: Path,
) -> None:
    text = LOCAL.format(service="", gateway="mock", state=tmp_path / "s")
    release = Stack(env_from(tmp_path, text)).release
    gone = Instance("00000000aa", 9090)
    with pytest.raises(ArtefactError) as failure:
        release._require_artefact(gone)
    message = failure.value.message
    assert "service-00000000aa-9090 must run to drain its invocations" in message
    assert "invoke build --env" in message and "invoke cancel" in message


def test_the_debian_mirror_comes_from_the_apt_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.test/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.test/debian/\nSuites: bookworm\n"
    )
    assert debian_mirror(tmp_path) == "http://mirror.test/debian"
    empty = tmp_path / "none"
    empty.mkdir()
    (empty / "sources.list").write_text("deb http://old.test/debian bookworm main\n")
    assert debian_mirror(empty) == "http://old.test/debian"
