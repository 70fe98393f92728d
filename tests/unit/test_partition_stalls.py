"""A leader-to-be whose log reader stalled is told apart from a healthy or idle replica
(rows shaped as `partition_state` gave them on a stalled cluster, 2026-12-07)."""

from __future__ import annotations

from typing import Any

from ops.server.partition_stalls import Replica, find_stalls


def row(node: str, target: str, effective: str, applied: int, tail: int, idle_s: int,
        partition: int = 1) -> dict[str, Any]:  # fmt: skip
    return {
        "partition_id": partition,
        "plain_node_id": node,
        "target_mode": target,
        "effective_mode": effective,
        "applied_log_lsn": applied,
        "target_tail_lsn": tail,
        "last_record_applied_at": "2026-12-07T03:43:19.004Z",
        "updated_at": f"2026-12-07T03:{43 + idle_s // 60:02d}:{19 + idle_s % 60:02d}.004Z",
    }


STALLED = [
    row("N1", "follower", "Follower", 5551, 5552, 0),
    row("N2", "leader", "Candidate->Leader", 5549, 5552, 40),
]


def replicas(rows: list[dict[str, Any]]) -> list[Replica]:
    return [Replica.from_row(r) for r in rows]


def test_a_candidate_sitting_on_records_is_stalled_and_the_replica_ahead_takes_over() -> None:
    (stall,) = find_stalls(replicas(STALLED))
    assert (stall.stalled.node, stall.healthy.node) == ("N2", "N1")
    assert stall.stalled.pending == 2 and stall.stalled.idle_s == 40.0
    assert "partition 1: N2's candidate stalled at LSN 5549" in stall.line()


def test_not_stalled() -> None:
    # Not yet long enough; a leader already there; caught up but idle; nobody ahead.
    assert find_stalls(replicas(STALLED), stall_s=60) == []
    led = [STALLED[0] | {"effective_mode": "Leader"}, STALLED[1]]
    assert find_stalls(replicas(led)) == []
    idle = [STALLED[0], row("N2", "leader", "Candidate->Leader", 5549, 5550, 40)]
    assert find_stalls(replicas(idle)) == []
    alone = [row("N1", "follower", "Follower", 5549, 5552, 40), STALLED[1]]
    assert find_stalls(replicas(alone)) == []


def test_each_partition_on_its_own() -> None:
    other = [row("N3", "leader", "Leader", 10, 11, 0, partition=2)]
    stalls = find_stalls(replicas([*other, *STALLED]))
    assert [s.stalled.partition for s in stalls] == [1]
