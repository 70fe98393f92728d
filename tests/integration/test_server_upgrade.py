"""A server version the data rules out is refused before anything stops: the running
restate-server keeps its pid and keeps serving (real server, real marker)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import httpx
import pytest

from ops.base import environments
from ops.base.environments import PROJECT_ROOT, Environment
from ops.base.steps import StepContext
from ops.operations.backup import read_manifest
from ops.release.release import ReleaseOptions
from ops.release.stack import Stack, deploy, down, status, status_lines
from ops.server import runtimes
from ops.server.cluster_features import IDEMPOTENT_SHARDING, read_features
from ops.server.runtimes import SERVER, BinaryRuntime
from ops.server.server_config import server_config
from ops.server.server_upgrade import MARKER, markers, show
from tests.conftest import EnvFactory


def pinned(stack: Stack, version: str, tmp_path: Path) -> Environment:
    """The shared stack's environment (same name, ports and state) with another version."""
    text = stack.env.file.read_text().replace(
        "[restate]\n", f'[restate]\nversion = "{version}"\n', 1
    )
    file = tmp_path / version / stack.env.file.name
    file.parent.mkdir(exist_ok=True)
    file.write_text(text)
    return environments.load(str(file), root=PROJECT_ROOT)


def serving(stack: Stack) -> bool:
    return httpx.get(f"{stack.env.admin.url}/health", timeout=5).status_code == 200


def test_a_target_the_data_rules_out_fails_with_the_server_still_up(
    stack: Stack, tmp_path: Path
) -> None:
    pid = stack.procs.info(SERVER).pid
    (marker,) = sorted(stack.env.state_dir.rglob(MARKER))
    original = marker.read_text()
    assert json.loads(original)["current_version"] == stack.env.settings.restate.version

    # A rollback inside the window is refused unless asked for; nothing is installed.
    out = io.StringIO()
    play = deploy(pinned(stack, "1.6.2", tmp_path), out=out)
    assert play.failed and "--allow-downgrade" in out.getvalue()
    assert stack.procs.info(SERVER).pid == pid and serving(stack)

    # Allowed, but this data was provisioned by 1.7.12 with controlled-idempotent-sharding,
    # which 1.6 lacks: refused again (the running server was asked), unless resharding
    # is allowed too, as the plan then says.
    downgrade = ReleaseOptions(allow_downgrade=True)
    out = io.StringIO()
    play = deploy(pinned(stack, "1.6.2", tmp_path), out=out, options=downgrade)
    text = " ".join(out.getvalue().split())
    assert play.failed and f"provisioned with {IDEMPOTENT_SHARDING}" in text, text
    assert "--allow-resharding" in text and "nothing stopped" in text
    assert stack.procs.info(SERVER).pid == pid and serving(stack)
    out = io.StringIO()
    resharding = ReleaseOptions(allow_downgrade=True, allow_resharding=True)
    env = pinned(stack, "1.6.2", tmp_path)
    assert not deploy(env, out=out, check=True, diff=True, options=resharding).failed
    text = out.getvalue()
    assert f"cluster features (read from the running server): {IDEMPOTENT_SHARDING}" in text
    assert stack.procs.info(SERVER).pid == pid and serving(stack)

    # Data written by a newer server (its window starts at 1.7.0): refused even when a
    # downgrade is allowed, naming what the data requires.
    data = json.loads(original)
    data["min_forward_compatible_version"] = "1.7.0"
    marker.write_text(json.dumps(data))
    try:
        out = io.StringIO()
        options = ReleaseOptions(allow_downgrade=True)
        play = deploy(pinned(stack, "1.6.2", tmp_path), out=out, options=options)
        text = out.getvalue()
        assert play.failed and "requires >= 1.7.0" in text and "nothing stopped" in text
        assert stack.procs.info(SERVER).pid == pid and serving(stack)

        # A skipped minor names the path; the check mode of an allowed upgrade is a plan.
        out = io.StringIO()
        assert deploy(pinned(stack, "1.9.0", tmp_path), out=out, check=True).failed
        assert "first 1.8.x" in out.getvalue()
        out = io.StringIO()
        play = deploy(pinned(stack, "1.8.0", tmp_path), out=out, check=True, diff=True)
        text = out.getvalue()
        assert "upgrade plan: → 1.8.0" in text and "current 1.7.12" in text, text
        assert stack.procs.info(SERVER).pid == pid and serving(stack)
    finally:
        marker.write_text(original)


def test_status_shows_the_versions_the_data_records(stack: Stack) -> None:
    version = stack.env.settings.restate.version
    (data,) = status(stack.env)["data_markers"]
    assert data["current_version"] == version and data["min_forward_compatible_version"]
    assert any(f"written by {version}" in line for line in status_lines(stack.env))


def repinned(env: Environment, version: str) -> Environment:
    """The same environment file (name, ports, state) with `[restate] version` changed."""
    text = env.file.read_text()
    lines = [line for line in text.splitlines() if not line.startswith("version = ")]
    env.file.write_text(
        "\n".join(lines).replace("[restate]", f'[restate]\nversion = "{version}"', 1)
    )
    return environments.load(str(env.file), root=PROJECT_ROOT)


def current_version(env: Environment) -> str:
    (marker,) = markers(env.state_dir)  # under data/ only, not the kept copies beside it
    return show(marker.current)


def booked(stack: Stack, ticket: str) -> str:
    return str(stack.ingress.call("Ticket", "get", key=ticket).json().get("status"))


FAILING_SERVER = """#!/bin/sh
# A restate-server that knows its config (the real one answers --dump-config) but does
# not come up: what a broken release looks like to deploy.
case "$*" in *--dump-config*) exec {real} "$@";; esac
echo "this build of restate-server cannot start" >&2
exit 3
"""


def test_a_version_switch_archives_the_data_keeps_the_bookings_and_goes_back_on_failure(
    make_env: EnvFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = make_env("switch", restate='version = "1.6.2"')
    out = io.StringIO()
    assert not deploy(env, out=out).failed, out.getvalue()
    try:
        stack = Stack(env)
        resp = stack.ingress.call("Checkout", "process", {"ticketId": "sw:1", "userId": "u1"})
        assert resp.status_code == 200, resp.text
        deployments = sorted(d["id"] for d in stack.admin.deployments())

        # 1.6.2 → 1.7.12: planned, then done with the data archived first.
        new = repinned(env, "1.7.12")
        out = io.StringIO()
        assert not deploy(new, out=out, check=True, diff=True).failed, out.getvalue()
        assert "would switch restate-server 1.6.2 → 1.7.12" in out.getvalue()
        assert current_version(env) == "1.6.2"
        out = io.StringIO()
        assert not deploy(new, out=out).failed, out.getvalue()
        assert "switched restate-server 1.6.2 → 1.7.12" in out.getvalue()
        assert current_version(env) == "1.7.12"
        (archive,) = (env.state_dir.parent / f"{env.state_dir.name}-backups").glob("*.tar.gz")
        assert read_manifest(archive)["server_version"] == "1.6.2"
        stack = Stack(new)
        assert booked(stack, "sw:1") == "SOLD"
        assert sorted(d["id"] for d in stack.admin.deployments()) == deployments
        pid = stack.procs.info(SERVER).pid

        # A target whose own config keys lack one the toolkit writes: refused, not stopped.
        real = BinaryRuntime(new, stack.procs).binary
        fake = BinaryRuntime(new, stack.procs).binary_of("1.7.99")
        fake.parent.mkdir(parents=True)
        fake.write_text(FAILING_SERVER.format(real=real))
        fake.chmod(0o755)
        broken = repinned(env, "1.7.99")
        with monkeypatch.context() as patch:
            written = server_config(broken)
            patch.setattr(runtimes, "server_config", lambda e: written + "bogus-key = 1\n")
            out = io.StringIO()
            assert deploy(broken, out=out).failed
        text = " ".join(out.getvalue().split())  # the step's message wraps
        assert "does not know admin.bogus-key" in text and "nothing was stopped" in text, text
        assert stack.procs.info(SERVER).pid == pid and booked(stack, "sw:1") == "SOLD"

        # A target that does not come up: the old binary back on the archived data.
        out = io.StringIO()
        assert deploy(broken, out=out).failed
        text = " ".join(out.getvalue().split())
        assert "cannot start" in text and "went back to restate-server 1.7.12" in text, text
        stack = Stack(new)
        assert stack.procs.info(SERVER).alive and current_version(env) == "1.7.12"
        assert booked(stack, "sw:1") == "SOLD"
        out = io.StringIO()
        assert not deploy(repinned(env, "1.7.12"), out=out).failed, out.getvalue()

        # Provisioned by 1.6.2, the cluster has no features on 1.7.12 either: a rollback
        # to 1.6.2 keeps the Idempotency-Keys, so it needs --allow-downgrade alone.
        assert read_features(env, "1.7.12", StepContext()).names == ()
        out = io.StringIO()
        options = ReleaseOptions(allow_downgrade=True)
        play = deploy(repinned(env, "1.6.2"), out=out, check=True, diff=True, options=options)
        assert not play.failed, out.getvalue()
        assert "cluster features (read from the running server): none" in out.getvalue()
        repinned(env, "1.7.12")
    finally:
        shutil.rmtree(BinaryRuntime(env, Stack(env).procs).binary_of("1.7.99").parents[4], True)
        down(env, purge=True, out=io.StringIO())
