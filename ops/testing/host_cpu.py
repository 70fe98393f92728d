"""CPU accounting from /proc: a process group's CPU, the host's busy and stolen time,
and what else the host ran while a load was measured."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ops.base.processes import PGRP, UTIME, proc_stats


def cpu_seconds(pgid: int) -> float:
    """User + system CPU of a live process group (a granian supervisor and its worker,
    say) and the children its members reaped, from /proc."""
    total = 0
    for fields in proc_stats() or []:
        if int(fields[PGRP]) == pgid:
            total += sum(int(v) for v in fields[UTIME : UTIME + 4])
    return total / os.sysconf("SC_CLK_TCK")


def host_cpu_seconds() -> tuple[float, float]:
    """The whole host's busy and stolen CPU seconds since boot, from /proc/stat (zeros
    where there is none).

    Busy is user, nice, system, irq and softirq; steal is time the hypervisor gave our
    virtual CPUs to someone else, which slows every phase alike without showing in any
    process's figures."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields)
    except (OSError, ValueError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return (user + nice + system + irq + softirq) / tick, steal / tick


def host_share_pct(cpu_s: float, wall_s: float) -> float:
    """CPU seconds as a percentage of what all the host's CPUs had in `wall_s`."""
    capacity = wall_s * (os.cpu_count() or 1)
    return round(100 * cpu_s / capacity, 1) if capacity > 0 else 0.0


def measure_cpu(pids: dict[str, int], action: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """Run `action`; CPU seconds each process group spent meanwhile, plus k6 (our
    children), everything else the host ran (`others`: other processes, this one, kernel
    threads) and the hypervisor's `steal`."""
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    host_busy, host_steal = host_cpu_seconds()
    started = time.monotonic()
    value = action()
    wall = time.monotonic() - started
    busy, steal = host_cpu_seconds()
    after_kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    split = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    split["k6"] = (after_kids.ru_utime + after_kids.ru_stime) - (kids.ru_utime + kids.ru_stime)
    split["others"] = max(0.0, (busy - host_busy) - sum(split.values()))
    split["steal"] = steal - host_steal
    split["wall"] = wall
    return value, split


#: Steal (% of the host's CPU time) above which a run's figures say more about the
#: neighbours than about the stack: 13% turned a 180 ms p99 into 1,040 ms in a flash sale.
NOISY_STEAL_PCT = 5.0


def steal_line(steal_pct: float) -> str:
    """The summary's line on the hypervisor's share, with a warning when it is large."""
    line = f"host steal       {steal_pct:.1f}% of CPU time during the run"
    if steal_pct >= NOISY_STEAL_PCT:
        line += " (high: the figures above understate the stack; run again)"
    return line
