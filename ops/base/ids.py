"""Run and seat ids for the toolkit's own traffic (test-all, chaos, node loss): unique per
run, so the same checks run again and again against a live environment without a reset.
(k6's scripts make their own run ids, in their own format: see `ops.testing.k6.new_run_id`.)"""

from __future__ import annotations

import time
import uuid


def new_run_id() -> str:
    """A fresh run id: the time of day and 6 random hex digits (no `:`, which ticket ids
    reserve for `event:seat`)."""
    return f"{time.strftime('%H%M%S')}{uuid.uuid4().hex[:6]}"


def fresh_seat(prefix: str, label: str) -> str:
    """A seat id no one has used: `prefix`, `label` and 8 random hex digits."""
    return f"{prefix}{label}-{uuid.uuid4().hex[:8]}"
