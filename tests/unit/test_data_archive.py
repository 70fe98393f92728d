"""Data archives (ops/server/data_archive.py): a whole data directory, or one node's."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from ops.base import environments
from ops.server.data_archive import ArchiveRefused, read_manifest, write_archive
from ops.server.server_upgrade import Marker
from tests.conftest import env_toml


def _env_with_two_nodes(tmp_path: Path) -> environments.Environment:
    file = tmp_path / "a.toml"
    file.write_text(env_toml(tmp_path / "state"))
    env = environments.load(str(file), root=tmp_path)
    for node in ("n1", "n2"):
        (env.state_dir / "data" / node / "db").mkdir(parents=True)
        (env.state_dir / "data" / node / "db" / "000001.sst").write_bytes(node.encode() * 100)
    return env


def test_a_node_archive_holds_that_node_only_and_names_it(tmp_path: Path) -> None:
    env = _env_with_two_nodes(tmp_path)
    marker = Marker.from_record("n1", {"current_version": "1.7.12"})
    archive = tmp_path / "n1.tar.gz"
    write_archive(env, archive, server_version="1.7.12", found=[marker], deployments=[], node="n1")
    manifest = read_manifest(archive)
    assert manifest["node"] == "n1" and manifest["markers"][0]["node"] == "n1"
    assert list(manifest["files"]) == ["n1/db/000001.sst"]
    assert manifest["size_bytes"] == 200
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "data/n1/db/000001.sst" in names and not any("n2" in n for n in names)


def test_a_whole_archive_holds_every_node_and_names_none(tmp_path: Path) -> None:
    env = _env_with_two_nodes(tmp_path)
    archive = tmp_path / "all.tar.gz"
    write_archive(env, archive, server_version="1.7.12", found=[], deployments=["dp_1"])
    manifest = read_manifest(archive)
    assert "node" not in manifest
    assert sorted(manifest["files"]) == ["n1/db/000001.sst", "n2/db/000001.sst"]


def test_a_truncated_node_archive_is_refused(tmp_path: Path) -> None:
    env = _env_with_two_nodes(tmp_path)
    archive = tmp_path / "n2.tar.gz"
    write_archive(env, archive, server_version="1.7.12", found=[], deployments=[], node="n2")
    archive.write_bytes(archive.read_bytes()[:-40])
    with pytest.raises(ArchiveRefused, match="corrupt or truncated"):
        read_manifest(archive)
