"""Backup and restore of a single restate-server's data (binary runtime).

Restate has no online backup of a node: the server is stopped gracefully, its whole data
directory archived, and the server started again. The archive (`.tar.gz`) holds the data
under `data/` and a `manifest.json` first: environment, server version, each node's
data marker, time, size and a sha256 per file, so a restore can refuse an archive that
is corrupt, truncated, from another environment, or one the pinned version cannot open,
before it stops anything."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ops.base.environments import Environment
from ops.base.errors import NexusError
from ops.base.processes import ProcessManager
from ops.base.steps import StepContext
from ops.clients.admin import AdminClient
from ops.release.artefacts import sha256
from ops.server.runtimes import SERVER, BinaryRuntime
from ops.server.server_upgrade import Marker, judge, markers, parse_version

MANIFEST = "manifest.json"


class BackupRefused(NexusError):
    """The archive cannot be restored here (nothing was stopped or changed)."""


@dataclass(frozen=True)
class Outcome:
    """What a backup or restore did, and how long the server was down."""

    archive: Path
    manifest: dict[str, Any]
    downtime_s: float


def _runtime(env: Environment) -> BinaryRuntime:
    if env.runtime != "binary":
        raise NexusError(
            f"{env.name}: backup and restore cover the binary runtime (one node); runtime ="
            f" {env.runtime!r}: a cluster has partition snapshots (`invoke snapshot`)"
        )
    return BinaryRuntime(env, ProcessManager(env.state_dir))


def data_dir(env: Environment) -> Path:
    return env.state_dir / "data"


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _deployment_ids(env: Environment) -> list[str]:
    client = AdminClient(env.admin.url, env.token)
    try:
        return sorted(str(d.get("id")) for d in client.deployments())
    finally:
        client.close()


def _restart(runtime: BinaryRuntime) -> None:
    runtime.server(StepContext())


def backup(env: Environment, into: Path | None = None) -> Outcome:
    """Stop the server gracefully, archive its data with a manifest, start it again."""
    runtime = _runtime(env)
    source = data_dir(env)
    found = markers(env.state_dir)
    if not source.is_dir() or not found:
        raise NexusError(f"{env.name}: no server data in {source} (deploy first)")
    deployments = _deployment_ids(env) if runtime.procs.info(SERVER).alive else []
    folder = into or env.state_dir.parent / f"{env.state_dir.name}-backups"
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    archive = folder / f"{env.name}-{stamp}.tar.gz"
    down_at = time.monotonic()
    runtime.procs.stop(SERVER)
    try:
        files = _files(source)
        manifest: dict[str, Any] = {
            "environment": env.name,
            "server_version": env.settings.restate.version,
            "markers": [marker.record() for marker in found],
            "deployments": deployments,
            "time": datetime.now(UTC).isoformat(),
            "size_bytes": sum(p.stat().st_size for p in files),
            "files": {str(p.relative_to(source)): sha256(p) for p in files},
        }
        with tarfile.open(archive, "w:gz") as tar:
            body = json.dumps(manifest, indent=1).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
            tar.add(source, "data")
    finally:
        _restart(runtime)
    return Outcome(archive, manifest, time.monotonic() - down_at)


def read_manifest(archive: Path) -> dict[str, Any]:
    """The archive's manifest, after checking every file against it (corrupt: refused)."""
    if not archive.is_file():
        raise BackupRefused(f"{archive}: no such archive")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            member = tar.extractfile(MANIFEST)
            if member is None:
                raise BackupRefused(f"{archive}: no {MANIFEST} (not a Nexus backup)")
            manifest: dict[str, Any] = json.loads(member.read())
            seen: dict[str, str] = {}
            for entry in tar:
                if entry.isfile() and entry.name.startswith("data/"):
                    handle = tar.extractfile(entry)
                    assert handle is not None
                    seen[entry.name[len("data/") :]] = hashlib.sha256(handle.read()).hexdigest()
    except (tarfile.TarError, EOFError, OSError, ValueError, KeyError) as exc:
        raise BackupRefused(f"{archive}: corrupt or truncated archive ({exc})") from None
    if seen != manifest.get("files"):
        bad = sorted(set(seen.items()) ^ set(dict(manifest.get("files", {})).items()))
        raise BackupRefused(f"{archive}: files differ from its manifest ({len(bad)} entries)")
    return manifest


def restore(env: Environment, archive: Path, *, force: bool = False) -> Outcome:
    """Check the archive, stop the server, put the archived data in place, start it, and
    prove it: the archived deployments are registered again. The replaced data is kept
    beside it (`data.before-restore-<time>`)."""
    runtime = _runtime(env)
    manifest = read_manifest(archive)
    if manifest.get("environment") != env.name and not force:
        raise BackupRefused(
            f"{archive}: a backup of environment {manifest.get('environment')!r}, not"
            f" {env.name!r} (--force restores it anyway)"
        )
    target = parse_version(env.settings.restate.version)
    for recorded in manifest.get("markers", []):
        marker = Marker.from_record(str(recorded["node"]), recorded)
        verdict = judge(target, marker, allow_downgrade=True)
        if verdict.kind == "refused" and not force:
            raise BackupRefused(f"{archive}: {verdict.reason} (--force restores it anyway)")
    down_at = time.monotonic()
    runtime.procs.stop(SERVER)
    target_dir = data_dir(env)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    if target_dir.exists():
        target_dir.rename(target_dir.with_name(f"data.before-restore-{stamp}"))
    with tarfile.open(archive, "r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name == "data" or m.name.startswith("data/")]
        tar.extractall(env.state_dir, members=members, filter="data")
    _restart(runtime)
    downtime = time.monotonic() - down_at
    missing = sorted(set(manifest.get("deployments", [])) - set(_deployment_ids(env)))
    if missing:
        raise NexusError(f"restored {archive}, but deployments are missing: {missing}")
    return Outcome(archive, manifest, downtime)
