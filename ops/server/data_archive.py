"""A single restate-server's data directory as a checked archive (`.tar.gz`): the data
under `data/` and a `manifest.json` first (environment, server version, each node's data
marker, deployments, time, size and a sha256 per file). `invoke backup` writes one, and so
does deploy before it switches the server's version; `invoke restore` and deploy's
fallback put one back. A cluster roll writes one per node (`data/<node>/` only) before
it restarts that node."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ops.base.environments import Environment
from ops.base.errors import NexusError
from ops.base.files import sha256
from ops.server.server_upgrade import Marker

MANIFEST = "manifest.json"


class ArchiveRefused(NexusError):
    """The archive cannot be restored here (nothing was stopped or changed)."""


def data_dir(env: Environment) -> Path:
    return env.state_dir / "data"


def backups_dir(env: Environment) -> Path:
    """Where archives go unless told otherwise: beside the state folder, not in it."""
    return env.state_dir.parent / f"{env.state_dir.name}-backups"


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")


def write_archive(
    env: Environment,
    archive: Path,
    *,
    server_version: str,
    found: list[Marker],
    deployments: list[str],
    node: str | None = None,
) -> dict[str, Any]:
    """Archive the (stopped) server's data directory with its manifest; the manifest.
    With `node`, only that (stopped) node's `data/<node>/`, and the manifest names it."""
    source = data_dir(env)
    root = source / node if node else source
    files = sorted(p for p in root.rglob("*") if p.is_file())
    manifest: dict[str, Any] = {
        "environment": env.name,
        **({"node": node} if node else {}),
        "server_version": server_version,
        "markers": [marker.record() for marker in found],
        "deployments": deployments,
        "time": datetime.now(UTC).isoformat(),
        "size_bytes": sum(p.stat().st_size for p in files),
        "files": {str(p.relative_to(source)): sha256(p) for p in files},
    }
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        body = json.dumps(manifest, indent=1).encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
        tar.add(source, "data", recursive=node is None)
        if node:
            tar.add(root, f"data/{node}")
    return manifest


def read_manifest(archive: Path) -> dict[str, Any]:
    """The archive's manifest, after checking every file against it (corrupt: refused)."""
    if not archive.is_file():
        raise ArchiveRefused(f"{archive}: no such archive")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = tar.extractfile(MANIFEST)
            if member is None:
                raise ArchiveRefused(f"{archive}: no {MANIFEST} (not a Nexus backup)")
            manifest: dict[str, Any] = json.loads(member.read())
            seen: dict[str, str] = {}
            for entry in tar:
                if entry.isfile() and entry.name.startswith("data/"):
                    handle = tar.extractfile(entry)
                    assert handle is not None
                    seen[entry.name[len("data/") :]] = hashlib.sha256(handle.read()).hexdigest()
    except (tarfile.TarError, EOFError, OSError, ValueError, KeyError) as exc:
        raise ArchiveRefused(f"{archive}: corrupt or truncated archive ({exc})") from None
    if seen != manifest.get("files"):
        bad = sorted(set(seen.items()) ^ set(dict(manifest.get("files", {})).items()))
        raise ArchiveRefused(f"{archive}: files differ from its manifest ({len(bad)} entries)")
    return manifest


def put_back(env: Environment, archive: Path, reason: str) -> Path:
    """The archived data in place of the (stopped) server's; the replaced data is kept
    beside it as `data.<reason>-<time>`, which this returns."""
    target = data_dir(env)
    kept = target.with_name(f"data.{reason}-{stamp()}")
    if target.exists():
        target.rename(kept)
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name == "data" or m.name.startswith("data/")]
        tar.extractall(env.state_dir, members=members, filter="data")
    return kept
