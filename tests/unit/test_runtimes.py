"""The binary runtime's config step: a partition count change on existing data is named."""

from __future__ import annotations

from pathlib import Path

from ops import environments
from ops.runtimes import partitions_note
from ops.server_config import server_config
from tests.conftest import env_toml


def _configs(tmp_path: Path) -> tuple[str, str]:
    """restate-server's config for a 2-partition environment, and the same with 1."""
    file = tmp_path / "p.toml"
    file.write_text(env_toml(tmp_path / "state"))
    before = server_config(environments.load(str(file), root=tmp_path))
    after = before.replace("default-num-partitions = 2", "default-num-partitions = 1")
    assert after != before
    return before, after


def test_a_partition_change_on_existing_data_asks_for_a_purge(tmp_path: Path) -> None:
    before, after = _configs(tmp_path)
    data = tmp_path / "data"
    (data / "db").mkdir(parents=True)
    note = partitions_note(before, after, data)
    assert "partitions 2 → 1" in note
    assert "invoke down --purge" in note


def test_no_note_without_data_without_a_change_or_on_first_write(tmp_path: Path) -> None:
    before, after = _configs(tmp_path)
    data = tmp_path / "data"
    assert partitions_note(before, after, data) == ""  # no data directory yet
    data.mkdir()
    assert partitions_note(before, after, data) == ""  # an empty one
    (data / "db").mkdir()
    assert partitions_note(before, before, data) == ""
    assert partitions_note("", after, data) == ""  # the first config written
