"""The binary runtime's config step: a partition count change on existing data is named."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ops.base import environments
from ops.base.processes import ProcessManager, ProcessSpec
from ops.base.steps import Status, StepContext
from ops.server.runtimes import READY_GRACE_S, ensure_process, partitions_note
from ops.server.server_config import server_config
from tests.conftest import env_toml


def _configs(tmp_path: Path) -> tuple[str, str]:
    """restate-server's config for a 2-partition environment, and the same with 1."""
    file = tmp_path / "p.toml"
    file.write_text(env_toml(tmp_path / "state"))
    before = server_config(environments.load(str(file), root=tmp_path))
    after = before.replace("default-num-partitions = 2", "default-num-partitions = 1")
    assert after != before
    return before, after


def test_a_partition_change_on_existing_data_asks_for_a_purge(tmp_path: Path) -> None:
    before, after = _configs(tmp_path)
    data = tmp_path / "data"
    (data / "db").mkdir(parents=True)
    note = partitions_note(before, after, data)
    assert "partitions 2 → 1" in note
    assert "invoke down --purge" in note


def test_no_note_without_data_without_a_change_or_on_first_write(tmp_path: Path) -> None:
    before, after = _configs(tmp_path)
    data = tmp_path / "data"
    assert partitions_note(before, after, data) == ""  # no data directory yet
    data.mkdir()
    assert partitions_note(before, after, data) == ""  # an empty one
    (data / "db").mkdir()
    assert partitions_note(before, before, data) == ""
    assert partitions_note("", after, data) == ""  # the first config written


def test_a_running_process_whose_probe_is_slow_once_is_not_restarted(tmp_path: Path) -> None:
    """One probe timing out under load is no reason to kill a busy process; a process
    that stays silent for the whole grace is restarted (check mode says so)."""
    procs = ProcessManager(tmp_path)
    answers = iter([False, False, True])
    spec = ProcessSpec(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(30)"], tmp_path, [],
        ready=lambda: next(answers, True), ready_timeout=5,
    )  # fmt: skip
    pid = procs.start(spec)
    try:
        answers = iter([False, False, True])  # start-up used the first answers
        result = ensure_process(procs, spec, StepContext())
        assert result.status is Status.OK and procs.info("sleeper").pid == pid
        silent = ProcessSpec(
            "sleeper", spec.argv, tmp_path, [], ready=lambda: False, ready_timeout=5
        )
        started = time.monotonic()
        check = ensure_process(procs, silent, StepContext(check=True))
        assert check.status is Status.CHANGED and "not answering" in check.message
        assert time.monotonic() - started >= READY_GRACE_S
        assert procs.info("sleeper").pid == pid  # check mode restarted nothing
    finally:
        procs.stop("sleeper", timeout=1)
