"""Another restate-server version on the same data, as a single-node runtime (binary or
Docker) switches it: what the server holds is read, the server stopped gracefully, its
data archived, the target started on it and the holdings found again; when the target
does not come up, the archived data goes back under the old version and the switch fails
saying so. The runtime supplies how to stop, start and go back."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ops.base.environments import Environment
from ops.base.errors import NexusError
from ops.server.data_archive import backups_dir, put_back, stamp, write_archive
from ops.server.server_upgrade import UpgradeFailed, markers

SQL_WARMUP_S = 30.0  # a fresh server may refuse SQL while its partitions start


@dataclass(frozen=True)
class Holdings:
    """What must survive a switch: the registered deployments and the Tickets' state."""

    deployments: list[str]
    ticket_entries: int


def holdings(env: Environment) -> Holdings:
    """The server's registered deployment ids and its number of Ticket state entries."""
    from ops.clients.admin import AdminClient

    admin = AdminClient(env.admin.url, env.token)
    try:
        ids = sorted(str(d.get("id")) for d in admin.deployments())
        rows = admin.query("SELECT count(*) AS n FROM state WHERE service_name = 'Ticket'")
    finally:
        admin.close()
    return Holdings(ids, int(rows[0]["n"]) if rows else 0)


def check_kept(env: Environment, before: Holdings, warmup_s: float = SQL_WARMUP_S) -> None:
    """Every deployment of `before` registered again and at least as many Ticket entries."""
    deadline = time.monotonic() + warmup_s
    while True:
        try:
            after = holdings(env)
            break
        except NexusError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    missing = sorted(set(before.deployments) - set(after.deployments))
    if missing or after.ticket_entries < before.ticket_entries:
        raise NexusError(
            f"after the switch: deployments missing {missing}, Ticket state entries"
            f" {after.ticket_entries} (before: {before.ticket_entries})"
        )


def archive_path(env: Environment, new: str) -> Path:
    """Where the data is archived before switching to `new`."""
    return backups_dir(env) / f"{env.name}-before-{new}-{stamp()}.tar.gz"


def plan_line(old: str, new: str, archive: Path) -> str:
    """The switch in one line, for `--check --diff` and the step's diff."""
    return (
        f"restate-server: {old} → {new}: stop gracefully, archive the data"
        f" ({archive.parent}/), start {new} on it, check deployments and Tickets;"
        f" if {new} does not come up, the archived data goes back under {old}"
    )


@dataclass(frozen=True)
class SwitchSteps:
    """How a runtime stops its server, starts the target (what runs, e.g. `pid 12`) and
    starts the old version again after the data went back (what happened, in words)."""

    running: bool
    stop: Callable[[], object]
    start: Callable[[], str]
    go_back: Callable[[], str]
    stop_target: Callable[[], object]


def switch(env: Environment, old: str, new: str, archive: Path, steps: SwitchSteps) -> str:
    """Carry out the switch; what happened. UpgradeFailed, after going back, when the
    target exits, is not ready or loses a deployment or Tickets."""
    before = holdings(env) if steps.running else None
    down_at = time.monotonic()
    steps.stop()
    write_archive(
        env,
        archive,
        server_version=old,
        found=markers(env.state_dir),
        deployments=before.deployments if before else [],
    )
    try:
        running = steps.start()
        downtime = time.monotonic() - down_at
        if before is not None:
            check_kept(env, before)
    except NexusError as exc:
        steps.stop_target()
        failed = put_back(env, archive, f"failed-{new}")
        back = steps.go_back()
        raise UpgradeFailed(
            f"restate-server {new} did not come up on the data: {exc}\n{back}"
            f" (the new version's attempt is kept in {failed})"
        ) from None
    return (
        f"switched restate-server {old} → {new} ({running}, down {downtime:.1f}s, data"
        f" archived to {archive})"
    )
