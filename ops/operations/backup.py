"""Backup and restore of a single restate-server's data (binary and Docker runtimes).

Restate has no online backup of a node: the server is stopped gracefully, its whole data
directory archived, and the server started again. The archive (`.tar.gz`) holds the data
under `data/` and a `manifest.json` first: environment, server version, each node's
data marker, time, size and a sha256 per file, so a restore can refuse an archive that
is corrupt, truncated, from another environment, or one the pinned version cannot open,
before it stops anything."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.base.environments import Environment
from ops.base.errors import NexusError
from ops.base.processes import ProcessManager
from ops.base.steps import StepContext
from ops.clients.admin import AdminClient
from ops.server import data_archive
from ops.server.data_archive import (
    ArchiveRefused,
    backups_dir,
    data_dir,
    put_back,
    stamp,
    write_archive,
)
from ops.server.docker_runtime import DockerRuntime
from ops.server.runtimes import SERVER, BinaryRuntime
from ops.server.server_upgrade import Marker, judge, markers, parse_version


class BackupRefused(ArchiveRefused):
    """The archive cannot be restored here (nothing was stopped or changed)."""


@dataclass(frozen=True)
class Outcome:
    """What a backup or restore did, and how long the server was down."""

    archive: Path
    manifest: dict[str, Any]
    downtime_s: float


@dataclass(frozen=True)
class _Server:
    """How the environment's one server is seen running, stopped gracefully and started."""

    running: Callable[[], bool]
    stop: Callable[[], object]
    start: Callable[[], object]


def _server(env: Environment) -> _Server:
    if env.runtime == "binary":
        binary = BinaryRuntime(env, ProcessManager(env.state_dir))
        return _Server(
            lambda: binary.procs.info(SERVER).alive,
            lambda: binary.procs.stop(SERVER),
            lambda: binary.server(StepContext()),
        )
    if env.runtime == "docker":
        container = DockerRuntime(env)

        def running() -> bool:
            found = container.inspect()
            return found is not None and found.running

        return _Server(running, container.remove, lambda: container.server(StepContext()))
    raise NexusError(
        f"{env.name}: backup and restore cover one node (runtime binary or docker); runtime"
        f" = {env.runtime!r}: a cluster has partition snapshots (`invoke snapshot`)"
    )


def _deployment_ids(env: Environment) -> list[str]:
    client = AdminClient(env.admin.url, env.token)
    try:
        return sorted(str(d.get("id")) for d in client.deployments())
    finally:
        client.close()


def backup(env: Environment, into: Path | None = None) -> Outcome:
    """Stop the server gracefully, archive its data with a manifest, start it again."""
    server = _server(env)
    source = data_dir(env)
    found = markers(env.state_dir)
    if not source.is_dir() or not found:
        raise NexusError(f"{env.name}: no server data in {source} (deploy first)")
    deployments = _deployment_ids(env) if server.running() else []
    archive = (into or backups_dir(env)) / f"{env.name}-{stamp()}.tar.gz"
    down_at = time.monotonic()
    server.stop()
    try:
        manifest = write_archive(
            env,
            archive,
            server_version=env.settings.restate.version,
            found=found,
            deployments=deployments,
        )
    finally:
        server.start()
    return Outcome(archive, manifest, time.monotonic() - down_at)


def read_manifest(archive: Path) -> dict[str, Any]:
    """The archive's manifest, after checking every file against it (corrupt: refused)."""
    try:
        return data_archive.read_manifest(archive)
    except ArchiveRefused as exc:
        raise BackupRefused(str(exc)) from None


def restore(env: Environment, archive: Path, *, force: bool = False) -> Outcome:
    """Check the archive, stop the server, put the archived data in place, start it, and
    prove it: the archived deployments are registered again. The replaced data is kept
    beside it (`data.before-restore-<time>`)."""
    server = _server(env)
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
    server.stop()
    put_back(env, archive, "before-restore")
    server.start()
    downtime = time.monotonic() - down_at
    missing = sorted(set(manifest.get("deployments", [])) - set(_deployment_ids(env)))
    if missing:
        raise NexusError(f"restored {archive}, but deployments are missing: {missing}")
    return Outcome(archive, manifest, downtime)
