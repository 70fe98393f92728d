"""The docker runtime against a real Docker engine and the stand-in image (ops.server.engine):
deploy, contract scenarios, data across recreation, a container that dies at once, a
`docker kill` under load, down and purge. Skipped only where no engine answers, and
never when NEXUS_REQUIRE_DOCKER is set (CI sets it: `.ci/run` starts the engine)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ops.base import environments
from ops.base.docker_cli import docker
from ops.base.environments import PROJECT_ROOT, Environment
from ops.base.errors import NexusError, RuntimeUnavailable
from ops.base.processes import free_port
from ops.base.steps import Status, StepContext
from ops.chaos import run_chaos
from ops.operations.backup import backup, read_manifest, restore
from ops.release.service_containers import ServiceContainers
from ops.release.stack import Stack, deploy, down, status_lines
from ops.server.cluster_features import read_features
from ops.server.docker_runtime import DockerRuntime
from ops.server.engine import IMAGE, build_image, image_present, restate_binary, server_version
from ops.testing import scenarios
from tests.conftest import env_toml

pytestmark = pytest.mark.integration

DockerEnv = Callable[..., Environment]


@pytest.fixture(scope="module")
def engine() -> str:
    """The engine's version, with the stand-in image built on it if it was missing."""
    version = server_version()
    if version is None:
        if os.environ.get("NEXUS_REQUIRE_DOCKER"):
            pytest.fail("NEXUS_REQUIRE_DOCKER is set, but no Docker engine answers")
        pytest.skip("no Docker engine answers (`python -m ops.server.engine up` provides one)")
    if not image_present(IMAGE):
        build_image(restate_binary())
    return version


@pytest.fixture
def docker_env(engine: str, tmp_path: Path) -> Iterator[DockerEnv]:
    """Write a docker-runtime environment on free ports; every stack made is taken down
    and purged afterwards."""
    made: list[Environment] = []

    def factory(name: str = "dock", **kwargs: object) -> Environment:
        file = tmp_path / f"{name}.toml"
        text = env_toml(tmp_path / f"state-{name}", **kwargs)  # type: ignore[arg-type]
        file.write_text(
            text.replace('runtime = "binary"', f'runtime = "docker"\nimage = "{IMAGE}"').replace(
                'mode = "process"', 'mode = "container"'
            )
        )
        env = environments.load(str(file), root=PROJECT_ROOT)
        made.append(env)
        return env

    yield factory
    for env in made:
        down(env, purge=True, out=io.StringIO())


def deployed(env: Environment) -> str:
    """Deploy; the play's output (the test fails with it when a step failed)."""
    out = io.StringIO()
    play = deploy(env, out=out)
    assert not play.failed, out.getvalue()
    return out.getvalue()


def recap(output: str) -> str:
    return output.strip().splitlines()[-1]


def book(stack: Stack, seat: str) -> None:
    resp = stack.ingress.call(
        "Checkout", "process", body={"ticketId": seat, "userId": "u1"}, timeout=30
    )
    assert resp.status_code == 200, resp.text


def seat_status(env: Environment, seat: str) -> str:
    resp = Stack(env).ingress.call("Ticket", "get", key=seat, timeout=30)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["status"])


def test_deploy_contract_scenarios_redeploy_status_and_down(docker_env: DockerEnv) -> None:
    env = docker_env()
    runtime = DockerRuntime(env)
    first = deployed(env)
    assert f"started container {runtime.container}" in first
    out = io.StringIO()
    outcomes = scenarios.test_all(env, out=out)
    assert not [o for o in outcomes if o.status == "failed"], out.getvalue()
    assert sum(o.status == "passed" for o in outcomes) >= 5, out.getvalue()
    assert "changed=0 failed=0" in recap(deployed(env))
    container = "\n".join(status_lines(env))
    assert f"  {runtime.container}  running  image {IMAGE}" in container

    gone = io.StringIO()
    down(env, out=gone)
    assert "failed=0" in recap(gone.getvalue()), gone.getvalue()
    assert f"container {runtime.container} stopped in" in gone.getvalue()
    assert runtime.inspect() is None  # no container left, running or stopped
    assert (env.state_dir / "data" / f"nexus-{env.name}").is_dir()  # data kept
    purge = io.StringIO()
    down(env, purge=True, out=purge)
    assert "failed=0" in recap(purge.getvalue()) and not env.state_dir.exists()


def test_bookings_survive_docker_stop_and_a_recreating_settings_change(
    docker_env: DockerEnv, tmp_path: Path
) -> None:
    env = docker_env("keep")
    deployed(env)
    runtime = DockerRuntime(env)
    book(Stack(env), "keep:1")

    stopped = runtime.remove()  # `docker stop` then `docker rm`: as after a reboot
    assert "stopped in" in stopped and runtime.inspect() is None
    again = deployed(env)
    assert f"started container {runtime.container}" in again
    assert seat_status(env, "keep:1") == "SOLD"

    # A new ingress port changes the container's settings: it is recreated on the data.
    old = f"http://127.0.0.1:{env.ingress.port}"
    env.file.write_text(env.file.read_text().replace(old, f"http://127.0.0.1:{free_port()}"))
    moved = environments.load(str(env.file), root=PROJECT_ROOT)
    out = deployed(moved)
    assert "(settings changed)" in out and "recreated container" in out
    assert seat_status(moved, "keep:1") == "SOLD"
    book(Stack(moved), "keep:2")
    assert seat_status(moved, "keep:2") == "SOLD"


def test_a_container_that_dies_at_once_is_reported_within_seconds_with_its_log(
    docker_env: DockerEnv,
) -> None:
    env = docker_env("dies")
    # A file where the node's data folder belongs: restate-server exits at start-up.
    (env.state_dir / "data").mkdir(parents=True)
    (env.state_dir / "data" / f"nexus-{env.name}").write_text("not a folder")
    runtime = DockerRuntime(env)
    with pytest.raises(NexusError) as failure:
        runtime.server(StepContext())
    message = failure.value.message
    assert f"container {runtime.container} exited with code" in message
    seconds = float(message.split(" after `docker run`")[0].rsplit(" ", 1)[-1].rstrip("s"))
    assert seconds < 10, message
    assert "failed to create data directory" in message  # the tail of `docker logs`


def test_server_crash_chaos_kills_the_container_under_load(docker_env: DockerEnv) -> None:
    env = docker_env("crash")
    deployed(env)
    out = io.StringIO()
    outcomes = {o.name: o for o in run_chaos(env, "server-crash", out=out)}
    crash = outcomes["server-crash"]
    assert crash.status == "passed", out.getvalue()
    assert f"killed restate-server container {DockerRuntime(env).container}" in crash.detail
    assert "no invocation left open" in crash.detail


def test_rollout_on_the_docker_runtime(docker_env: DockerEnv) -> None:
    """Versions run as containers beside each other, one image each; the containerised
    server reaches each of them (host networking) and drains the old one."""
    env = docker_env("rollout")
    deployed(env)
    out = io.StringIO()
    first = set(ServiceContainers(env).known())
    outcomes = run_chaos(env, "rollout", out=out)
    assert outcomes[0].status == "passed", out.getvalue()
    assert "0 journal mismatches" in outcomes[0].detail
    left = ServiceContainers(env).known()
    # The variant's container was retired once drained; the rollback's version remains.
    assert [n.split("-")[1] for n in left] == [n.split("-")[1] for n in first]
    assert all(c.running for c in left.values())


def pinned(env: Environment, version: str, image: str) -> Environment:
    """The same environment file with `[restate] version` and `image` changed."""
    lines = [
        line
        for line in env.file.read_text().splitlines()
        if not line.startswith(("version = ", "image = "))
    ]
    text = "\n".join(lines).replace(
        "[restate]", f'[restate]\nversion = "{version}"\nimage = "{image}"', 1
    )
    env.file.write_text(text)
    return environments.load(str(env.file), root=PROJECT_ROOT)


def running_image(runtime: DockerRuntime) -> str:
    found = runtime.inspect()
    assert found is not None and found.running
    return found.image


def test_a_version_switch_in_containers_keeps_the_bookings_and_goes_back_on_failure(
    docker_env: DockerEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deploy on a stand-in built from npm for 1.6.2, book, switch to the pinned 1.7.12 on
    the same data; an image that does not come up on it puts 1.7.12 back; a variable the
    target's --dump-config lacks stops nothing; backup and restore round-trip a booking; a
    foreign image is named."""
    old_tag, broken_tag = "nexus-local/restate-server:1.6.2", "nexus-test/restate-broken:1.7.99"
    env = pinned(docker_env("swap"), "1.6.2", old_tag)
    runtime = DockerRuntime(env)
    try:
        assert not image_present(old_tag)
        assert runtime.image(StepContext(check=True)).status is Status.CHANGED
        assert not image_present(old_tag)
        deployed(env)  # its image step builds the 1.6.2 stand-in
        assert running_image(runtime) == old_tag
        stack = Stack(env)
        book(stack, "dsw:1")
        deployments = sorted(d["id"] for d in stack.admin.deployments())

        new = pinned(env, "1.7.12", IMAGE)
        out = io.StringIO()
        assert not deploy(new, out=out, check=True, diff=True).failed, out.getvalue()
        text = " ".join(out.getvalue().split())
        assert f"would switch restate-server 1.6.2 → 1.7.12 (container {runtime.container}" in text
        assert running_image(runtime) == old_tag
        switched = " ".join(deployed(new).split())
        assert "switched restate-server 1.6.2 → 1.7.12" in switched, switched
        assert running_image(runtime) == IMAGE and seat_status(new, "dsw:1") == "SOLD"
        (archive,) = (env.state_dir.parent / f"{env.state_dir.name}-backups").glob("*.tar.gz")
        assert read_manifest(archive)["server_version"] == "1.6.2"
        assert sorted(d["id"] for d in Stack(new).admin.deployments()) == deployments
        # Provisioned by 1.6.2, so no cluster features (asked through the published port).
        assert read_features(new, "1.7.12", StepContext()).names == ()

        # An image that starts a server of another cluster name: it refuses the data.
        made = docker("create", IMAGE)
        assert made.returncode == 0, made.stderr
        entry = '["/usr/local/bin/restate-server","--cluster-name","not-this-one"]'
        committed = docker(
            "commit", "--change", f"ENTRYPOINT {entry}", made.stdout.strip(), broken_tag
        )
        docker("rm", made.stdout.strip())
        assert committed.returncode == 0, committed.stderr
        broken = pinned(env, "1.7.99", broken_tag)
        started_at = runtime.inspect().started_at  # type: ignore[union-attr]
        with monkeypatch.context() as patch:
            variables = DockerRuntime.variables
            patch.setattr(
                DockerRuntime,
                "variables",
                lambda self: {**variables(self), "RESTATE_ADMIN__BOGUS_KEY": "1"},
            )
            out = io.StringIO()
            assert deploy(broken, out=out).failed
        text = " ".join(out.getvalue().split())
        assert "does not know admin.bogus-key" in text and "nothing was stopped" in text, text
        assert runtime.inspect().started_at == started_at  # type: ignore[union-attr]

        out = io.StringIO()
        assert deploy(broken, out=out).failed
        text = " ".join(out.getvalue().split())
        assert "did not come up on the data" in text, text
        assert "went back to restate-server 1.7.12" in text, text
        assert running_image(runtime) == IMAGE and seat_status(new, "dsw:1") == "SOLD"
        assert "changed=0 failed=0" in recap(deployed(pinned(env, "1.7.12", IMAGE)))

        # Backup and restore in containers: a seat booked after the backup is gone after.
        taken = backup(new, into=env.state_dir.parent / "docker-backups")
        assert taken.manifest["server_version"] == "1.7.12" and running_image(runtime) == IMAGE
        book(Stack(new), "dsw:2")
        restored = restore(new, taken.archive)
        assert seat_status(new, "dsw:1") == "SOLD" and seat_status(new, "dsw:2") != "SOLD"
        assert running_image(runtime) == IMAGE and restored.downtime_s > 0
    finally:
        down(env, purge=True, out=io.StringIO())
        docker("image", "rm", "--force", old_tag, broken_tag)
    foreign = pinned(env, "1.7.12", "docker.io/restatedev/restate:0.0.1")
    with pytest.raises(RuntimeUnavailable, match=r"restate:0\.0\.1 is not in the engine"):
        DockerRuntime(foreign).image(StepContext())
