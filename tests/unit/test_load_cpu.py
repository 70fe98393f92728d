"""CPU accounting of `invoke bench` (ops/load.py) with real, short-lived processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ops.load import cpu_seconds
from ops.processes import UTIME, proc_stat

# A group leader that sleeps while its child burns CPU: granian's supervisor and worker.
LEADER = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import time\\nend = time.process_time() + 0.5\\nwhile time.process_time() < end: pass\\n"
    "print('burnt', flush=True)\\ntime.sleep(30)"], stdout=sys.stdout)
time.sleep(30)
"""


def test_cpu_of_a_group_counts_its_live_children() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", LEADER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "burnt"
        time.sleep(0.05)
        group = cpu_seconds(proc.pid)
        leader_fields = proc_stat(proc.pid)
        assert leader_fields is not None
        leader_alone = sum(int(v) for v in leader_fields[UTIME : UTIME + 2]) / os.sysconf(
            "SC_CLK_TCK"
        )
        assert group >= 0.45
        assert leader_alone < 0.3  # the leader itself only slept: the figure is the child's
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_cpu_of_an_unknown_group_is_zero() -> None:
    assert cpu_seconds(2**22 + 12345) == 0.0
