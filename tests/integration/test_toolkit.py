"""The toolkit against a real restate-server: idempotent deploy, check mode, down,
clear errors, a changed handler set as a new version, breaking changes refused."""

from __future__ import annotations

import io
import shutil
import socket
from pathlib import Path

import pytest

from ops.base.environments import PROJECT_ROOT
from ops.base.processes import group_alive
from ops.base.steps import Status
from ops.release.release import ReleaseOptions
from ops.release.stack import GATEWAY, Stack, deploy, down
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


def test_no_free_port_for_a_version_is_a_clear_failure(make_env: EnvFactory) -> None:
    env = make_env("taken")
    holders = []
    for port in env.service_ports:  # something else holds every port a version may take
        sock = socket.socket()
        try:
            sock.bind((env.service.host, port))
        except OSError:
            sock.close()
            continue
        sock.listen()
        holders.append(sock)
    out = io.StringIO()
    try:
        play = deploy(env, out=out)
    finally:
        for sock in holders:
            sock.close()
        down(env, purge=True, out=io.StringIO())
    assert play.failed
    failed = [r for r in play.results if r.status is Status.FAILED]
    assert failed[0].step == "service"
    assert "no free port left in the service's port range" in failed[0].message
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


def with_probe(into: Path) -> Path:
    """A copy of the service that also offers a `Probe` service (one handler, `ping`)."""
    target = into / "service"
    shutil.copytree(PROJECT_ROOT / "service", target, ignore=shutil.ignore_patterns("__pycache__"))
    app = target / "app.py"
    extra = (
        'probe = restate.Service("Probe")\n\n\n@probe.handler()\n'
        "async def ping(ctx: restate.Context) -> str:\n    return 'pong'\n\n\n"
        "SERVICES.append(probe)\n"
    )
    app.write_text(app.read_text().replace("app = restate.app(", extra + "app = restate.app("))
    return target


def test_a_changed_handler_set_is_a_new_version_and_removal_needs_allow_breaking(
    make_env: EnvFactory, tmp_path: Path
) -> None:
    env = make_env("rereg")
    stack = Stack(env)
    try:
        assert not deploy(env, out=io.StringIO()).failed
        first = stack.service_instance()
        # A version with one more service: a new deployment beside the first.
        options = ReleaseOptions(sources=with_probe(tmp_path), drain_timeout=20)
        out = io.StringIO()
        play = deploy(env, out=out, diff=True, options=options)
        assert not play.failed, out.getvalue()
        steps = {r.step: r for r in play.results}
        assert steps["service"].status is Status.CHANGED
        assert steps["registration"].status is Status.CHANGED
        assert "+ service Probe (ping)" in steps["registration"].diff
        assert "retired drained version" in steps["retire"].message
        assert stack.ingress.call("Probe", "ping").json() == "pong"
        assert stack.service_instance() != first
        assert not stack.procs.info(first.name).alive
        assert len(stack.release.deployments()) == 1
        again = deploy(env, out=io.StringIO(), options=options)
        assert again.counts()["changed"] == 0

        # Back to the sources without Probe: a removed service is refused...
        probe_version = stack.service_instance()
        out = io.StringIO()
        refused = deploy(env, out=out)
        assert refused.failed
        failed = next(r for r in refused.results if r.status is Status.FAILED)
        assert failed.step == "registration"
        assert "service Probe removed" in failed.message and "--allow-breaking" in failed.message
        # ...and changes nothing: the Probe version stays active and alone.
        assert stack.service_instance() == probe_version
        alive = [n for n in stack.procs.known() if stack.procs.info(n).alive]
        assert sorted(alive) == sorted([GATEWAY, "restate-server", probe_version.name])
        assert stack.ingress.call("Probe", "ping").status_code == 200

        # With --allow-breaking it goes through; the old version drains and is retired.
        allowed = ReleaseOptions(allow_breaking=True, drain_timeout=20)
        out = io.StringIO()
        play = deploy(env, out=out, diff=True, options=allowed)
        assert not play.failed, out.getvalue()
        assert "- service Probe" in {r.step: r for r in play.results}["registration"].diff
        assert "Probe" not in {s["name"] for s in stack.admin.services()}
    finally:
        down(env, purge=True, out=io.StringIO())


def test_check_mode_on_a_drifted_stack_reports_what_deploy_would_do(make_env: EnvFactory) -> None:
    """Check mode never fails for drift a deploy would repair, and changes nothing."""
    env = make_env("drift")
    stack = Stack(env)
    try:
        assert not deploy(env, out=io.StringIO()).failed
        # The service process died; Restate still lists its deployment.
        instance = stack.service_instance()
        stack.procs.stop(instance.name)
        out = io.StringIO()
        steps = {r.step: r for r in deploy(env, check=True, out=out).results}
        assert [r.status for r in steps.values()].count(Status.FAILED) == 0, out.getvalue()
        assert steps["service"].status is Status.CHANGED
        assert "would restart" in steps["service"].message
        assert steps["registration"].status is Status.OK  # same version, still registered
        assert steps["smoke"].status is Status.SKIPPED and "service" in steps["smoke"].message
        assert not stack.procs.info(instance.name).alive

        # The service runs but its deployment was removed.
        assert not deploy(env, out=io.StringIO()).failed
        uri = stack.release.uri(instance)
        found = stack.admin.find_deployment(uri)
        assert found is not None
        stack.admin.delete_deployment(found["id"])
        out = io.StringIO()
        steps = {r.step: r for r in deploy(env, check=True, out=out).results}
        assert steps["registration"].status is Status.CHANGED, out.getvalue()
        assert steps["smoke"].status is Status.SKIPPED, out.getvalue()
        assert "registration" in steps["smoke"].message
        assert stack.admin.find_deployment(uri) is None
    finally:
        down(env, purge=True, out=io.StringIO())
