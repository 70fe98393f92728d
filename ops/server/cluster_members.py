"""Who sits in each slot of a local cluster: the node name and id, which change when a
node that lost its disk is replaced (`invoke replace-node`).

A slot is one set of ports (`[cluster]`, 1-based). Its first node is `n<slot>` with id
`<slot>`; a replacement is `n<slot>r<generation>` with an id never used before, because
Restate marks a log-server that comes back empty under an old identity as data-loss for
good. The record lives in `<state-dir>/cluster-members.json`; no file: every slot is on
its first node.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ops.base.errors import ConfigError

MEMBERS_FILE = "cluster-members.json"


@dataclass(frozen=True)
class Member:
    """The node currently in one slot."""

    slot: int
    generation: int = 0
    node_id: int = 0  # 0: the slot's own number

    @property
    def id(self) -> int:
        return self.node_id or self.slot

    @property
    def name(self) -> str:
        return f"n{self.slot}" if self.generation == 0 else f"n{self.slot}r{self.generation}"


@dataclass(frozen=True)
class Members:
    """Every slot's member and the node ids ever retired."""

    slots: dict[int, Member]
    retired: tuple[int, ...] = ()

    def member(self, slot: int) -> Member:
        return self.slots.get(slot, Member(slot))

    def next_id(self, count: int) -> int:
        """An id no node of this cluster has had: above every slot, member and retiree."""
        used = [count, *self.retired, *(m.id for m in self.slots.values())]
        return max(used) + 1

    def replaced(self, slot: int, count: int) -> Members:
        """These members with `slot` on a new node (next generation, fresh id)."""
        old = self.member(slot)
        new = Member(slot, old.generation + 1, self.next_id(count))
        return Members({**self.slots, slot: new}, (*self.retired, old.id))


def members_file(state_dir: Path) -> Path:
    return state_dir / MEMBERS_FILE


def load_members(state_dir: Path) -> Members:
    path = members_file(state_dir)
    if not path.is_file():
        return Members({})
    try:
        doc = json.loads(path.read_text())
        slots = {
            int(k): Member(int(k), int(v["generation"]), int(v["node_id"]))
            for k, v in doc.get("slots", {}).items()
        }
        return Members(slots, tuple(int(i) for i in doc.get("retired", [])))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"{path}: not a readable cluster membership record: {exc}") from None


def save_members(state_dir: Path, members: Members) -> None:
    path = members_file(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "slots": {
            str(s): {"generation": m.generation, "node_id": m.id}
            for s, m in sorted(members.slots.items())
        },
        "retired": list(members.retired),
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(path)
