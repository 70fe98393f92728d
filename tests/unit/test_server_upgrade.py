"""The data marker's rules: what a target version means for data written by another."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ops.base.errors import NexusError
from ops.server.server_upgrade import Marker, judge, markers, parse_version


def marker(current: str, max_: str | None = None, min_forward: str = "1.6.0") -> Marker:
    return Marker(
        node="n1",
        current=parse_version(current),
        max=parse_version(max_ or current),
        min_forward=parse_version(min_forward),
    )


@pytest.mark.parametrize(
    ("data", "target", "kind"),
    [
        (marker("1.7.12"), "1.7.12", "same"),
        (marker("1.6.2", min_forward="1.5.0"), "1.7.12", "upgrade"),  # the next minor
        (marker("1.7.2"), "1.7.12", "upgrade"),  # a patch
        (marker("1.7.12"), "1.8.3", "upgrade"),
        (marker("1.7.12"), "1.9.0", "refused"),  # skips 1.8
        (marker("1.7.12", min_forward="1.7.0"), "1.6.2", "refused"),  # below the window
        (marker("1.7.12"), "1.6.2", "refused"),  # a rollback, not asked for
    ],
)
def test_the_rules(data: Marker, target: str, kind: str) -> None:
    assert judge(parse_version(target), data, allow_downgrade=False).kind == kind


def test_a_rollback_inside_the_window_needs_to_be_asked_for() -> None:
    refused = judge(parse_version("1.6.2"), marker("1.7.12"), allow_downgrade=False)
    assert "--allow-downgrade" in refused.reason
    allowed = judge(parse_version("1.6.2"), marker("1.7.12"), allow_downgrade=True)
    assert allowed.kind == "downgrade" and "keeping its data" in allowed.reason
    below = judge(
        parse_version("1.6.2"), marker("1.7.12", min_forward="1.7.0"), allow_downgrade=True
    )
    assert below.kind == "refused" and ">= 1.7.0" in below.reason


def test_a_skipped_minor_names_the_supported_path() -> None:
    verdict = judge(parse_version("1.8.1"), marker("1.6.2"), allow_downgrade=False)
    assert verdict.kind == "refused" and "first 1.7.x" in verdict.reason


def test_markers_are_read_per_node_and_a_broken_one_is_named(tmp_path: Path) -> None:
    assert markers(tmp_path / "absent") == []
    for node in ("n1", "n2"):
        (tmp_path / "data" / node / node).mkdir(parents=True)
        (tmp_path / "data" / node / node / ".cluster-marker").write_text(
            json.dumps(
                {
                    "current_version": "1.7.12",
                    "max_version": "1.7.12",
                    "min_forward_compatible_version": "1.6.0",
                }
            )
        )
    assert [m.node for m in markers(tmp_path)] == ["n1", "n2"]
    (tmp_path / "data" / "n2" / "n2" / ".cluster-marker").write_text("{")
    with pytest.raises(NexusError, match="unreadable data marker"):
        markers(tmp_path)
    with pytest.raises(NexusError, match="not a restate-server version"):
        parse_version("latest")
