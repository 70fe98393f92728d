"""A partition whose elected leader never takes office, found and worked around.

Seen here once in 8 minor rolls (2026-12-07): after the last node of a roll restarted,
partition 1's processor on N2 stayed `Candidate->Leader` with its applied LSN frozen 2
records short of the tail, for 17 minutes and counting. Its log reader had stalled
(Restate issue #5033; the open PR #5075 would make such a processor bail out by itself).
A candidate becomes leader only by applying its own AnnounceLeader record from that same
reader, so the partition had no leader and its bookings hung. Pinning the leadership to
a replica that does apply the log gave the partition a leader within seconds. This module
finds such a candidate in the cluster's `partition_state` table and runs `restatectl
partitions leadership pin|unpin`. The cluster runtime restarts the stalled node (a fresh
reader) between the two."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ops.base.errors import NexusError
from ops.server.restatectl import run_restatectl, sql_rows

#: How long a candidate may sit on records it does not apply before it counts as stalled.
STALL_S = 15.0

REPLICAS_SQL = (
    "SELECT partition_id, plain_node_id, target_mode, effective_mode, applied_log_lsn,"
    " target_tail_lsn, last_record_applied_at, updated_at FROM partition_state"
)


@dataclass(frozen=True)
class Replica:
    """One partition processor, as `partition_state` reports it."""

    partition: int
    node: str  # plain node id, "N2"
    target_mode: str
    effective_mode: str
    applied: int
    tail: int  # the next LSN to be written (applied + 1 when caught up)
    idle_s: float  # since it last applied a record, by the reporting node's clock

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Replica:
        """From a row of REPLICAS_SQL (KeyError, ValueError, TypeError if malformed)."""
        applied_at, updated = row.get("last_record_applied_at"), row.get("updated_at")
        idle = (_when(updated) - _when(applied_at)).total_seconds() if applied_at else 0.0
        return cls(
            partition=int(row["partition_id"]),
            node=str(row["plain_node_id"]),
            target_mode=str(row["target_mode"]).lower(),
            effective_mode=str(row["effective_mode"]).lower(),
            applied=int(row.get("applied_log_lsn") or 0),
            tail=int(row.get("target_tail_lsn") or 0),
            idle_s=idle,
        )

    @property
    def pending(self) -> int:
        """Records written to the log that this processor has not applied."""
        return max(0, self.tail - self.applied - 1)


def _when(text: object) -> datetime:
    return datetime.fromisoformat(str(text))


@dataclass(frozen=True)
class Stall:
    """A candidate that cannot take office, and the replica to give leadership to."""

    stalled: Replica
    healthy: Replica

    def line(self) -> str:
        s = self.stalled
        return (
            f"partition {s.partition}: {s.node}'s candidate stalled at LSN {s.applied}"
            f" ({s.pending} records behind, none applied for {s.idle_s:.0f}s; Restate"
            f" issue #5033), leadership pinned to {self.healthy.node}"
        )


def find_stalls(replicas: list[Replica], *, stall_s: float = STALL_S) -> list[Stall]:
    """Partitions with no leader whose leader-to-be has records it has not applied for
    `stall_s`, each with the replica furthest along to take over (none: not listed)."""
    stalls = []
    for partition in sorted({r.partition for r in replicas}):
        own = [r for r in replicas if r.partition == partition]
        if any(r.effective_mode == "leader" for r in own):
            continue
        for r in own:
            if r.target_mode != "leader" or r.pending == 0 or r.idle_s < stall_s:
                continue
            others = [o for o in own if o.node != r.node and o.applied > r.applied]
            if others:
                stalls.append(Stall(r, max(others, key=lambda o: o.applied)))
    return stalls


def read_replicas(ctl: Path, addresses: list[str]) -> list[Replica]:
    """Every partition processor of the cluster (empty when restatectl cannot say)."""
    try:
        return [Replica.from_row(r) for r in sql_rows(ctl, addresses, REPLICAS_SQL)]
    except (NexusError, KeyError, ValueError, TypeError):
        return []


def pin_leader(ctl: Path, addresses: list[str], partition: int, node: str) -> None:
    """`restatectl partitions leadership pin --node N PARTITION`."""
    run_restatectl(ctl, addresses, "partitions", "leadership", "pin", "--node",
                   node.lstrip("N"), str(partition))  # fmt: skip


def unpin_leader(ctl: Path, addresses: list[str], partition: int) -> None:
    """`restatectl partitions leadership unpin PARTITION`."""
    run_restatectl(ctl, addresses, "partitions", "leadership", "unpin", str(partition))
