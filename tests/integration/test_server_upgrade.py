"""A server version the data rules out is refused before anything stops: the running
restate-server keeps its pid and keeps serving (real server, real marker)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx

from ops.base import environments
from ops.base.environments import PROJECT_ROOT, Environment
from ops.release.release import ReleaseOptions
from ops.release.stack import Stack, deploy, status, status_lines
from ops.server.runtimes import SERVER
from ops.server.server_upgrade import MARKER


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
