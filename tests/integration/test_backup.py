"""Backup and restore on a real single restate-server: a booking made before the backup
comes back, one made after it is gone, and bad archives are refused with the server up."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from ops.operations.backup import BackupRefused, backup, read_manifest, restore
from ops.release.stack import Stack, deploy, down
from ops.server.runtimes import SERVER
from tests.conftest import EnvFactory

pytestmark = pytest.mark.integration


def seat(stack: Stack, ticket: str) -> str:
    return str(stack.ingress.call("Ticket", "get", key=ticket).json().get("status"))


def test_backup_and_restore_round_trip_a_booking(make_env: EnvFactory, tmp_path: Path) -> None:
    env = make_env("bk")
    out = io.StringIO()
    assert not deploy(env, out=out).failed, out.getvalue()
    stack = Stack(env)
    try:
        resp = stack.ingress.call("Checkout", "process", {"ticketId": "bk:1", "userId": "u1"})
        assert resp.status_code == 200, resp.text
        taken = backup(env, into=tmp_path / "backups")
        assert taken.archive.is_file() and taken.manifest["environment"] == "bk"
        assert taken.manifest["deployments"] and taken.manifest["markers"]
        assert stack.procs.info(SERVER).alive  # started again
        resp = stack.ingress.call("Checkout", "process", {"ticketId": "bk:2", "userId": "u2"})
        assert resp.status_code == 200 and seat(stack, "bk:2") == "SOLD"

        # Bad archives: refused before anything stops.
        pid = stack.procs.info(SERVER).pid
        truncated = tmp_path / "truncated.tar.gz"
        truncated.write_bytes(taken.archive.read_bytes()[: taken.archive.stat().st_size // 2])
        with pytest.raises(BackupRefused, match="corrupt or truncated"):
            restore(env, truncated)
        other = tmp_path / "other.tar.gz"
        with tarfile.open(taken.archive) as src, tarfile.open(other, "w:gz") as dst:
            for member in src.getmembers():
                data = src.extractfile(member) if member.isfile() else None
                if member.name == "manifest.json" and data is not None:
                    manifest = json.loads(data.read())
                    manifest["environment"] = "prod"
                    body = json.dumps(manifest).encode()
                    member.size = len(body)
                    dst.addfile(member, io.BytesIO(body))
                else:
                    dst.addfile(member, data)
        with pytest.raises(BackupRefused, match="environment 'prod'"):
            restore(env, other)
        assert stack.procs.info(SERVER).pid == pid and seat(stack, "bk:2") == "SOLD"

        restored = restore(env, taken.archive)
        assert restored.downtime_s > 0
        assert seat(stack, "bk:1") == "SOLD" and seat(stack, "bk:2") != "SOLD"
        assert read_manifest(taken.archive)["files"] == taken.manifest["files"]
        print(  # the figures docs/upgrading.md quotes (pytest -s shows them)
            f"backup: {taken.manifest['size_bytes'] / 1e6:.1f} MB of data,"
            f" archive {taken.archive.stat().st_size / 1e6:.1f} MB, down {taken.downtime_s:.1f}s;"
            f" restore: down {restored.downtime_s:.1f}s"
        )
    finally:
        down(env, purge=True, out=io.StringIO())
