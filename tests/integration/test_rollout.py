"""Versioned rollouts against real servers: the `rollout` chaos scenario on a stack of its
own (checkouts in flight keep their version, new ones get the new one, the old one is
retired, a rollback under load breaks nothing), and the same swap done in place, which
must fail; deploy's options refused when bad, with nothing changed."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from ops.base import environments
from ops.base.environments import PROJECT_ROOT, Endpoint
from ops.base.processes import ProcessManager, free_port
from ops.base.steps import Status, StepContext
from ops.chaos import ChaosContext, run_chaos
from ops.chaos.rollout import rollout, variant_sources
from ops.operations.audit import audit
from ops.release.granian import asgi_spec
from ops.release.release import ReleaseOptions
from ops.release.stack import Stack, deploy, down
from ops.testing.checks import CheckFailed
from service import settings_names as names
from tests.conftest import EnvFactory, env_toml, run_invoke
from tests.integration.inflight import checkout_in_flight

pytestmark = pytest.mark.integration


def test_rollout_keeps_checkouts_in_flight_and_an_in_place_swap_fails(
    make_env: EnvFactory,
) -> None:
    env = make_env("rollout")
    stack = Stack(env)
    try:
        assert not deploy(env, out=io.StringIO()).failed
        first = stack.version
        out = io.StringIO()
        outcomes = run_chaos(env, "rollout", out=out)
        print(out.getvalue())
        result = outcomes[0]
        assert result.status == "passed", result.detail
        assert "5/5 200" in result.detail and "0 journal mismatches" in result.detail
        assert "old version retired" in result.detail and "audit ok" in result.detail
        # Back on the working tree's version, alone.
        deployments = stack.release.deployments()
        assert [d.version for d in deployments] == [first]

        # The same switch done in place (the code swapped under the running deployment):
        # the scenario sees the stuck checkouts and fails.
        with pytest.raises(CheckFailed, match="journal mismatch") as stuck:
            rollout(ChaosContext(env, out=io.StringIO()), in_place=True)
        assert "audit FAILED" in str(stuck.value)  # the audit sees the stuck work too
        # Its code put back, the stuck checkouts replay, finish, and the books balance.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and stack.admin.query(
            "SELECT id FROM sys_invocation WHERE status != 'completed'"
            " AND target_service_name = 'Checkout'"
        ):
            time.sleep(0.5)
        report = audit(env)
        assert report.ok, report.violations
    finally:
        gone = io.StringIO()
        down(env, purge=True, out=gone)
    assert "failed=0" in gone.getvalue().splitlines()[-1]
    assert not any(stack.procs.info(n).alive for n in stack.procs.known())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--drain-timeout", "soon"], "--drain-timeout takes seconds"),
        (["--drain-timeout", "-1"], "--drain-timeout takes seconds"),
    ],
)
def test_bad_deploy_options_are_refused_before_anything_runs(
    make_env: EnvFactory, args: list[str], message: str
) -> None:
    env = make_env("badopt")
    proc = run_invoke("deploy", "--env", str(env.file), *args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not env.state_dir.exists()


def test_url_mode_a_new_url_is_a_new_version_and_the_old_one_is_told_to_shut_down(
    tmp_path: Path,
) -> None:
    """A service hosted elsewhere (here: two granian processes the test runs itself)."""
    file = tmp_path / "hosted.toml"
    text = env_toml(tmp_path / "state").replace('mode = "process"', 'mode = "url"')
    file.write_text(text)
    env = environments.load(str(file), root=PROJECT_ROOT)
    hosts = ProcessManager(tmp_path / "hosts")
    urls = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    settings = {
        names.GATEWAY_URL: env.gateway.url,
        names.MAIL_OUTBOX: str(tmp_path / "outbox"),
    }
    try:
        for i, url in enumerate(urls):
            spec = asgi_spec(f"hosted-{i}", "service.app:app", Endpoint(url), PROJECT_ROOT,
                             env=settings)  # fmt: skip
            hosts.start(spec)
        first = deploy(env, out=io.StringIO(), options=ReleaseOptions(service_url=urls[0]))
        assert not first.failed
        stack = Stack(env)
        assert [d.uri.rstrip("/") for d in stack.release.deployments()] == [urls[0]]
        booked = stack.ingress.checkout("hosted:A1", "ann")
        assert booked.status_code == 200, booked.text

        out = io.StringIO()
        options = ReleaseOptions(service_url=urls[1], drain_timeout=20)
        second = deploy(env, out=out, options=options)
        assert not second.failed, out.getvalue()
        steps = {r.step: r for r in second.results}
        assert steps["service"].status is Status.SKIPPED  # nothing to run here
        assert f"at {urls[1]}" in steps["registration"].message
        assert urls[0] in steps["retire"].message
        assert "may be shut down now" in steps["retire"].message
        assert [d.uri.rstrip("/") for d in stack.release.deployments()] == [urls[1]]
        again = deploy(env, out=io.StringIO(), options=options)
        assert again.counts()["changed"] == 0
    finally:
        for i in range(len(urls)):
            hosts.stop(f"hosted-{i}")
        down(env, purge=True, out=io.StringIO())


def test_status_shows_a_version_draining_while_its_checkout_runs(
    make_env: EnvFactory, tmp_path: Path
) -> None:
    env = make_env("draining")
    stack = Stack(env)
    try:
        assert not deploy(env, out=io.StringIO()).failed
        first = stack.version
        variant = ReleaseOptions(sources=variant_sources(PROJECT_ROOT, tmp_path))
        built = Stack(env, variant).release.artefact_step(StepContext())  # build, then deploy
        assert built.status is Status.CHANGED, built.message
        with checkout_in_flight(stack, "drain:A1", "dora", charge_ms=8000) as answer:
            out = io.StringIO()
            play = deploy(env, out=out, options=variant)
            assert not play.failed, out.getvalue()
            retire = {r.step: r for r in play.results}["retire"]
            assert retire.status is Status.OK and f"draining: {first}: 1 unfinished" in (
                retire.message
            )
            proc = run_invoke("status", "--env", str(env.file), "--json")
            report = json.loads(proc.stdout)
            states = {v["version"]: (v["state"], v["unfinished"]) for v in report["versions"]}
            assert states[first] == ("draining", 1)
            assert sorted(states.values())[0][0] == "active"
            text = run_invoke("status", "--env", str(env.file)).stdout
            assert f"{first}" in text and "Draining (1 unfinished" in text
        assert answer.result().status_code == 200
        # Drained: the next deploy retires it, and nothing is left to do after that.
        retired = deploy(env, out=io.StringIO(), options=variant)
        assert (
            "retired drained version " + first
            in {r.step: r for r in retired.results}["retire"].message
        )
        assert deploy(env, out=io.StringIO(), options=variant).counts()["changed"] == 0
        report = json.loads(run_invoke("status", "--env", str(env.file), "--json").stdout)
        assert [v["state"] for v in report["versions"]] == ["active"]
        assert report["invocations"] == {"open": 0, "stuck": 0}
    finally:
        down(env, purge=True, out=io.StringIO())
