"""Partition snapshots of a local cluster: take them (`invoke snapshot`), read the latest
per partition from the object store, and drive restatectl for the cluster's maintenance.

Restate takes snapshots on its own every `[snapshots] interval_records` log records (and
`interval`); `snapshot` takes one of every partition now, as `restatectl snapshots
create-snapshot` does, optionally trimming each log up to it."""

from __future__ import annotations

import re
import time
from typing import Any

from ops.base.errors import NexusError, RuntimeUnavailable
from ops.base.steps import Result, StepContext, StepFn
from ops.server.cluster import ClusterRuntime
from ops.server.object_store import STORE
from ops.server.restatectl import RestatectlError, run_restatectl, sql_rows

_CREATED = re.compile(r"Snapshot created for partition (\d+): (\S+) \(log \d+ @ LSN >= (\d+)\)")


def _addresses(runtime: ClusterRuntime) -> list[str]:
    """Every node's address, once the pinned restatectl is known to be installed."""
    if not runtime.restatectl.is_file():
        raise RuntimeUnavailable(f"restatectl is not installed: run `invoke deploy --env"
                                 f" {runtime.env.name}` first")  # fmt: skip
    return [n.address for n in runtime.nodes]


def restatectl(runtime: ClusterRuntime, *args: str, timeout: float = 30.0) -> str:
    """Run the pinned restatectl against every node's address; stdout, or an error."""
    return run_restatectl(runtime.restatectl, _addresses(runtime), *args, timeout=timeout)


def sql(runtime: ClusterRuntime, query: str) -> list[dict[str, Any]]:
    """Rows of one query over the cluster's tables (`restatectl sql --json`)."""
    return sql_rows(runtime.restatectl, _addresses(runtime), query)


SNAPSHOT_ATTEMPTS = 5  # a partition whose leader is still settling is skipped by restatectl


def create_snapshots(runtime: ClusterRuntime, *, trim: bool = False) -> dict[int, int]:
    """Snapshot every partition now; partition → the LSN it covers. restatectl snapshots
    the partitions that answer; the others are asked again (a bounded number of times),
    and any still missing fail the call, named."""
    args = ["snapshots", "create-snapshot", *(["--trim-log"] if trim else [])]
    wanted = set(range(runtime.env.settings.restate.partitions))
    made: dict[int, int] = {}
    out = ""
    for attempt in range(SNAPSHOT_ATTEMPTS):
        if attempt:
            time.sleep(1.0)
        out = restatectl(runtime, *args, timeout=60.0)
        made.update({int(m[1]): int(m[3]) for m in _CREATED.finditer(out)})
        if wanted <= set(made):
            return made
    missing = ", ".join(str(p) for p in sorted(wanted - set(made)))
    raise RestatectlError(
        f"restatectl made no snapshot of partition(s) {missing} in {SNAPSHOT_ATTEMPTS}"
        f" attempts: {out.strip()[-1000:] or '(no output)'}"
    )


def missing_partitions(runtime: ClusterRuntime) -> list[int]:
    """Partitions without a snapshot in the store."""
    have = runtime.store.latest_snapshots()
    return [p for p in range(runtime.env.settings.restate.partitions) if p not in have]


def snapshot_step(runtime: ClusterRuntime) -> StepFn:
    """A step that takes a snapshot of every partition (a check says what it would take)."""

    def step(ctx: StepContext) -> Result:
        store = runtime.store
        if not store.enabled:
            raise NexusError(f"environment {runtime.env.name} has no snapshot store"
                             ' ([snapshots] store = "off")')  # fmt: skip
        if not runtime.procs.info(STORE).alive:
            raise NexusError(f"the snapshot store of {runtime.env.name} is not running"
                             " (`invoke deploy`)")  # fmt: skip
        if ctx.check:
            parts = runtime.env.settings.restate.partitions
            return Result.changed(f"would snapshot {parts} partitions to {store.destination}")
        started = time.monotonic()
        made = create_snapshots(runtime)
        seconds = time.monotonic() - started
        latest = store.latest_snapshots()
        size = sum(latest[p].size_bytes for p in made if p in latest)
        lsns = ", ".join(
            f"p{p}@{latest[p].min_applied_lsn if p in latest else lsn}"
            for p, lsn in sorted(made.items())
        )
        return Result.changed(
            f"{len(made)} partitions in {seconds:.1f}s ({lsns}), {size / 1024:.0f} KiB"
            f" in {store.destination}"
        )

    return step
