"""The toolkit against a real restate-server: idempotent deploy, check mode, down,
clear errors, re-registration on a changed handler set."""

from __future__ import annotations

import dataclasses
import io
import socket
from pathlib import Path

import pytest

from ops.processes import group_alive
from ops.stack import SERVICE, Stack, deploy, down
from ops.steps import Context, Status
from tests.conftest import EnvFactory, run_invoke

pytestmark = pytest.mark.integration


def recap(play_out: io.StringIO) -> str:
    return play_out.getvalue().strip().splitlines()[-1]


def test_deploy_is_idempotent_and_down_leaves_nothing(make_env: EnvFactory) -> None:
    env = make_env("idem")
    stack = Stack(env)
    try:
        first_out = io.StringIO()
        first = deploy(env, out=first_out)
        assert not first.failed, first_out.getvalue()
        assert first.counts()["changed"] >= 3
        pids = [stack.procs.info(n).pid for n in stack.procs.known()]
        assert len(pids) == 3 and all(pids)

        second_out = io.StringIO()
        second = deploy(env, out=second_out)
        assert "changed=0" in recap(second_out) and "failed=0" in recap(second_out)
        assert second.counts()["ok"] == len(second.results)
        assert [stack.procs.info(n).pid for n in stack.procs.known()] == pids
    finally:
        gone = io.StringIO()
        down(env, purge=True, out=gone)
    assert "failed=0" in recap(gone)
    assert all(pid is not None and not group_alive(pid) for pid in pids)
    assert not env.state_dir.exists()


def test_check_mode_changes_nothing(make_env: EnvFactory) -> None:
    env = make_env("check")
    out = io.StringIO()
    play = deploy(env, check=True, diff=True, out=out)
    text = out.getvalue()
    assert not play.failed, text
    assert "would start restate-server" in text or "would install" in text
    assert "would register" in text
    assert "stopped → running" in text  # --diff shows before/after
    assert Stack(env).procs.known() == []
    assert not (env.state_dir / "run").exists()


def test_taken_port_is_a_clear_failure(make_env: EnvFactory) -> None:
    env = make_env("taken")
    holder = socket.socket()
    holder.bind((env.service.host, env.service.port))
    holder.listen()
    out = io.StringIO()
    try:
        play = deploy(env, out=out)
    finally:
        holder.close()
        down(env, purge=True, out=io.StringIO())
    assert play.failed
    failed = [r for r in play.results if r.status is Status.FAILED]
    assert failed[0].step == "service"
    assert f"port {env.service.port}" in failed[0].message and "already in use" in failed[0].message
    assert "failed=1" in recap(out)


def test_broken_environment_file_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "broken.toml"
    bad.write_text(
        '[restate]\nruntime = "binary"\ningress_url = "http://127.0.0.1:1"\n'
        'admin_url = "http://127.0.0.1:2"\nflavour = "x"\n[service]\nmode = "process"\n'
        'url = "http://127.0.0.1:3"\n'
    )
    proc = run_invoke("deploy", "--env", str(bad))
    assert proc.returncode != 0
    assert str(bad) in proc.stderr and "restate.flavour" in proc.stderr


def test_changed_handler_set_triggers_reregistration(make_env: EnvFactory) -> None:
    env = make_env("rereg")
    stack = Stack(env)
    try:
        assert not deploy(env, out=io.StringIO()).failed
        # Swap the running service for a build that offers one more service.
        stack.procs.stop(SERVICE)
        normal = stack.service_spec()
        variant = dataclasses.replace(
            normal,
            argv=[
                a.replace("service.app:app", "tests.integration.variant_app:app")
                for a in normal.argv
            ],
        )
        stack.procs.start(variant)
        result = stack.registration_step(Context(show_diff=True))
        assert result.status is Status.CHANGED and "re-registered" in result.message
        assert "+ service Probe (ping)" in result.diff
        assert stack.ingress.call("Probe", "ping").json() == "pong"
        again = stack.registration_step(Context())
        assert again.status is Status.OK
        # Back to the normal build: deploy restarts it and registers the smaller set.
        out = io.StringIO()
        play = deploy(env, out=out)
        assert not play.failed, out.getvalue()
        steps = {r.step: r for r in play.results}
        assert steps["service"].status is Status.CHANGED
        assert steps["registration"].status is Status.CHANGED
        assert "- service Probe" in steps["registration"].diff
    finally:
        down(env, purge=True, out=io.StringIO())


def test_check_mode_on_a_drifted_stack_reports_what_deploy_would_do(make_env: EnvFactory) -> None:
    """Check mode never fails for drift a deploy would repair, and changes nothing."""
    env = make_env("drift")
    stack = Stack(env)
    try:
        assert not deploy(env, out=io.StringIO()).failed
        # The service process died; Restate still lists its deployment.
        stack.procs.stop(SERVICE)
        out = io.StringIO()
        steps = {r.step: r for r in deploy(env, check=True, out=out).results}
        assert [r.status for r in steps.values()].count(Status.FAILED) == 0, out.getvalue()
        assert steps["service"].status is Status.CHANGED
        assert steps["registration"].status is Status.SKIPPED
        assert "once the service restarts" in steps["registration"].message
        assert steps["smoke"].status is Status.SKIPPED and "service" in steps["smoke"].message
        assert not stack.procs.info(SERVICE).alive

        # The service runs but its deployment was removed.
        assert not deploy(env, out=io.StringIO()).failed
        found = stack.admin.find_deployment(stack.registration_uri)
        assert found is not None
        stack.admin.delete_deployment(found["id"])
        out = io.StringIO()
        steps = {r.step: r for r in deploy(env, check=True, out=out).results}
        assert steps["registration"].status is Status.CHANGED, out.getvalue()
        assert steps["smoke"].status is Status.SKIPPED, out.getvalue()
        assert "registration" in steps["smoke"].message
        assert stack.admin.find_deployment(stack.registration_uri) is None
    finally:
        down(env, purge=True, out=io.StringIO())
