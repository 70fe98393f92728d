"""CPU accounting of `invoke bench` (ops/load.py) with real, short-lived processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from ops import k6
from ops.load import cpu_ms_per_call, cpu_seconds
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


def test_cpu_per_call_counts_server_service_and_gateway_over_every_answer() -> None:
    outcomes = dict.fromkeys(k6.OUTCOMES, 0) | {"confirmed": 150, "sold_out": 50}
    summary = k6.LoadSummary(
        requests=200,
        duration_s=1.0,
        checkouts_per_s=200.0,
        p50_ms=1,
        p95_ms=1,
        p99_ms=1,
        outcomes=outcomes,
    )
    cpu = {"restate-server": 1.0, "service": 0.6, "gateway": 0.2, "k6": 5.0, "wall": 20.0}
    assert cpu_ms_per_call(cpu, summary) == 9.0  # 1.8 s over 200 answers; k6 and wall left out
    assert cpu_ms_per_call({"restate-server": 1.0}, summary) == 5.0  # a process not measured
    empty = k6.LoadSummary(
        requests=0, duration_s=1.0, checkouts_per_s=0, p50_ms=0, p95_ms=0, p99_ms=0
    )
    assert cpu_ms_per_call(cpu, empty) == 0.0
