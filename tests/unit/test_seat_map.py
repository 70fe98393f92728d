"""Where a seat's notices go: the seat-map shard of its event."""

from __future__ import annotations

import os
import subprocess
import sys

from service.seat_map import SHARDS, shard_key


def test_a_seat_goes_to_a_shard_of_its_own_event() -> None:
    assert shard_key("concert:a1").startswith("concert#")
    assert shard_key("solo-seat").startswith("global#")
    index = int(shard_key("concert:a1").rsplit("#", 1)[1])
    assert 0 <= index < SHARDS


def test_one_event_spreads_over_every_shard() -> None:
    used = {shard_key(f"concert:s{n}") for n in range(40 * SHARDS)}
    assert used == {f"concert#{n}" for n in range(SHARDS)}


def test_the_shard_does_not_depend_on_the_process() -> None:
    """Every service process must route a seat alike: no per-process `hash` salt."""
    seats = [f"event-{n}:seat-{n}" for n in range(20)]
    code = (
        f"from service.seat_map import shard_key; print(' '.join(shard_key(s) for s in {seats!r}))"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.split() == [shard_key(s) for s in seats]
