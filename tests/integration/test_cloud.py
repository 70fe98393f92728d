"""A Cloud-like environment against the real test stack: token-enforcing proxies stand in
for Restate Cloud's admin (:9070) and ingress (:8080), the service is registered by URL
(`mode = "url"`), and the token comes from `.env.NAME`, never from the environment file.

Every admin and ingress call must carry the bearer token; the token must never show up in
output, errors or process arguments."""

from __future__ import annotations

import io
import json
import os
import re
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from ops.base import environments
from ops.base.environments import PROJECT_ROOT, Environment
from ops.base.errors import NexusError, SecretMissing, TokenRejected
from ops.base.processes import free_port
from ops.base.steps import Status
from ops.clients.admin import AdminClient, IngressClient
from ops.release.stack import Stack, deploy, status_lines
from ops.testing import scenarios
from ops.testing.load import audit_run
from ops.testing.runs import drive
from tests.conftest import run_invoke
from tests.integration.token_proxy import ProxyServer, serve, serve_server

pytestmark = pytest.mark.integration

TOKEN_VAR = "RESTATE_AUTH_TOKEN"
ENV_NAME = "cloudtest"


@dataclass
class Cloud:
    """Two proxies in front of the test stack, and the token they want."""

    stack: Stack
    ingress: ProxyServer
    admin: ProxyServer
    token: str


@pytest.fixture(scope="module")
def cloud(stack: Stack) -> Iterator[Cloud]:
    token = "tok-" + secrets.token_urlsafe(24)
    with (
        serve_server(stack.env.ingress.url, token) as ingress,
        serve_server(stack.env.admin.url, token) as admin,
    ):
        yield Cloud(stack, ingress, admin, token)


@pytest.fixture(autouse=True)
def no_token_in_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_VAR, raising=False)


def cloud_toml(cloud: Cloud, state_dir: Path, service_url: str | None = None) -> str:
    env = cloud.stack.env
    return f"""
# A Restate Cloud look-alike: token-enforcing proxies in front of a local server.
[restate]
runtime = "external"
ingress_url = "{cloud.ingress.url}"
admin_url = "{cloud.admin.url}"
token_env = "{TOKEN_VAR}"

[service]
mode = "url"
url = "{service_url or env.service.url}"
hold_seconds = {env.settings.service.hold_seconds}

[gateway]
mode = "external"
url = "{env.gateway.url}"

[state]
dir = "{state_dir}"
"""


def make_cloud_env(
    base: Path, cloud: Cloud, token: str | None, service_url: str | None = None
) -> Environment:
    """`base/cloudtest.toml`, loaded with root `base/root` whose `.env.cloudtest` holds
    `token` (no secrets file at all when None)."""
    root = base / "root"
    (root / "environments").mkdir(parents=True, exist_ok=True)
    if token is not None:
        (root / f".env.{ENV_NAME}").write_text(f"{TOKEN_VAR}={token}\n")
    file = base / f"{ENV_NAME}.toml"
    file.write_text(cloud_toml(cloud, base / "state", service_url))
    return environments.load(str(file), root=root)


def recap(text: str) -> str:
    return text.strip().splitlines()[-1]


def steps(play: Any) -> dict[str, Status]:
    return {r.step: r.status for r in play.results}


# --- the proxy itself ---------------------------------------------------------------------


class _Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _echo(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        data = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        ).encode()
        self.send_response(207)
        self.send_header("Content-Type", "application/x-echo+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _echo

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_proxy_refuses_without_the_token_and_forwards_with_it(echo: str) -> None:
    token = secrets.token_hex(16)
    with serve(echo, token) as url:
        assert url.startswith("http://127.0.0.1:")
        bare = httpx.post(f"{url}/Checkout/process", json={})
        wrong = httpx.get(f"{url}/health", headers={"Authorization": "Bearer nope"})
        basic = httpx.get(f"{url}/health", headers={"Authorization": f"Basic {token}"})
        for resp in (bare, wrong, basic):
            assert resp.status_code == 401
            assert resp.json() == {"message": "unauthorized"}
        resp = httpx.post(
            f"{url}/Ticket/a%3Ab/get?x=1&y=two",
            content=b'{"k": 1}',
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "Idempotency-Key": "idem-1",
            },
        )
        assert resp.status_code == 207
        assert resp.headers["content-type"] == "application/x-echo+json"
        seen = resp.json()
        assert seen["method"] == "POST"
        assert seen["path"] == "/Ticket/a%3Ab/get?x=1&y=two"
        assert seen["body"] == '{"k": 1}'
        assert seen["headers"]["content-type"] == "application/json"
        assert seen["headers"]["accept"] == "application/json"
        assert seen["headers"]["idempotency-key"] == "idem-1"
        assert "authorization" not in seen["headers"]
        assert token not in resp.text
        # Many at once, over kept-alive connections.
        with httpx.Client(headers={"Authorization": f"Bearer {token}"}) as client:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=24) as pool:
                codes = list(
                    pool.map(lambda i: client.delete(f"{url}/n/{i}").status_code, range(48))
                )
        assert codes == [207] * 48
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/health", timeout=2)


# --- deploy, test-all and errors through the proxies --------------------------------------


def test_deploy_registers_by_url_through_the_token_proxy(cloud: Cloud, tmp_path: Path) -> None:
    env = make_cloud_env(tmp_path, cloud, cloud.token)
    assert TOKEN_VAR not in os.environ
    assert env.token == cloud.token
    assert cloud.token not in repr(env)
    refused = cloud.admin.refused + cloud.ingress.refused

    first_out = io.StringIO()
    first = deploy(env, out=first_out)
    assert not first.failed, first_out.getvalue()
    assert steps(first) == {
        "server": Status.OK,
        "gateway": Status.SKIPPED,
        "artefact": Status.SKIPPED,  # hosted elsewhere: `invoke build --push` ships it
        "service": Status.SKIPPED,
        "registration": Status.OK,  # the stack registered this very URL already
        "smoke": Status.OK,
        "retire": Status.OK,  # no older version of it
    }
    assert f"answers at {cloud.admin.url}" in first_out.getvalue()

    second_out = io.StringIO()
    second = deploy(env, check=False, diff=True, out=second_out)
    assert not second.failed, second_out.getvalue()
    assert "changed=0" in recap(second_out.getvalue())
    assert "failed=0" in recap(second_out.getvalue())

    check_out = io.StringIO()
    assert not deploy(env, check=True, diff=True, out=check_out).failed
    assert "changed=0" in recap(check_out.getvalue())

    # `invoke status` runs from the project (its root); the token comes from the process env.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(TOKEN_VAR, cloud.token)
        status = "\n".join(status_lines(environments.load(str(env.file), root=PROJECT_ROOT)))
    assert "healthy" in status and env.service.url in status

    # Every call carried the token, none was refused; nothing was started locally.
    assert cloud.admin.refused + cloud.ingress.refused == refused
    assert Stack(env).procs.known() == []
    for text in (first_out.getvalue(), second_out.getvalue(), check_out.getvalue(), status):
        assert cloud.token not in text


def test_test_all_passes_every_scenario_through_the_proxy(cloud: Cloud, tmp_path: Path) -> None:
    env = make_cloud_env(tmp_path, cloud, cloud.token)
    refused = cloud.ingress.refused
    before = cloud.ingress.requests
    out = io.StringIO()
    outcomes = scenarios.test_all(env, out=out)
    text = out.getvalue()
    assert [o.name for o in outcomes if o.status != "passed"] == [], text
    assert {o.name for o in outcomes} >= {"concurrent-buyers", "hold-expiry", "bulk-bookings"}
    assert recap(text) == f"{len(outcomes)} passed, 0 failed"
    assert cloud.ingress.requests - before > 50
    assert cloud.ingress.refused == refused
    assert cloud.token not in text


def test_wrong_token_is_rejected_by_admin_and_ingress(cloud: Cloud, tmp_path: Path) -> None:
    wrong = "tok-" + secrets.token_urlsafe(24)
    env = make_cloud_env(tmp_path, cloud, wrong)
    out = io.StringIO()
    play = deploy(env, out=out)
    text = out.getvalue()
    assert play.failed
    assert steps(play)["server"] is Status.FAILED
    assert f"token rejected by admin at {cloud.admin.url}" in text
    assert "failed=1" in recap(text)
    assert wrong not in text and cloud.token not in text

    ingress = IngressClient(env.ingress.url, env.token)
    try:
        with pytest.raises(TokenRejected) as rejected:
            ingress.call("Ticket", "get", key="nexus-smoke:seat-0")
    finally:
        ingress.close()
    assert f"token rejected by ingress at {cloud.ingress.url}" in str(rejected.value)
    assert wrong not in str(rejected.value)

    # A refused token is no reason to claim the server is merely down.
    admin = AdminClient(env.admin.url, env.token)
    try:
        with pytest.raises(TokenRejected):
            admin.healthy()
    finally:
        admin.close()


def test_missing_token_names_the_variable(cloud: Cloud, tmp_path: Path) -> None:
    env = make_cloud_env(tmp_path, cloud, token=None)  # loading needs no secret
    refused = cloud.admin.refused
    out = io.StringIO()
    play = deploy(env, out=out)
    assert play.failed
    assert steps(play)["server"] is Status.FAILED
    assert TOKEN_VAR in out.getvalue()
    assert str(env.root / f".env.{ENV_NAME}") in out.getvalue()
    assert cloud.admin.refused == refused  # failed before sending anything
    with pytest.raises(SecretMissing, match=TOKEN_VAR):
        scenarios.test_all(env, out=io.StringIO())


def test_invoke_test_all_takes_the_token_from_the_process_environment(
    cloud: Cloud, tmp_path: Path
) -> None:
    # `--env PATH` reads secrets relative to the project root: pass the token by env.
    env = make_cloud_env(tmp_path, cloud, token=None)
    child_env = {**os.environ, TOKEN_VAR: cloud.token}
    leaked: list[str] = []
    done = threading.Event()

    def watch_argv() -> None:
        needle = cloud.token.encode()
        while not done.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    if needle in cmdline.read_bytes():
                        leaked.append(str(cmdline))
                except OSError:
                    continue
            time.sleep(0.1)

    watcher = threading.Thread(target=watch_argv, daemon=True)
    watcher.start()
    try:
        proc = run_invoke("test-all", "--env", str(env.file), env=child_env, timeout=120)
    finally:
        done.set()
        watcher.join(timeout=10)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert re.search(r"^\d+ passed, 0 failed$", proc.stdout, re.MULTILINE), output
    assert "FAIL " not in proc.stdout
    assert cloud.token not in output
    assert leaked == []


def test_unreachable_service_url_fails_discovery_clearly(cloud: Cloud, tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    env = make_cloud_env(tmp_path, cloud, cloud.token, service_url=nowhere)
    out = io.StringIO()
    play = deploy(env, out=out)
    text = out.getvalue()
    assert play.failed, text
    assert steps(play)["registration"] is Status.FAILED
    assert steps(play)["smoke"] is Status.SKIPPED
    assert f"discovery of {nowhere} failed" in text
    assert cloud.token not in text
    assert cloud.stack.admin.find_deployment(nowhere) is None


def test_invoke_test_all_without_a_token_is_a_clear_error(cloud: Cloud, tmp_path: Path) -> None:
    env = make_cloud_env(tmp_path, cloud, token=None)
    child_env = {k: v for k, v in os.environ.items() if k != TOKEN_VAR}
    proc = run_invoke("test-all", "--env", str(env.file), env=child_env)
    assert proc.returncode != 0
    assert TOKEN_VAR in proc.stderr
    assert "Traceback" not in proc.stderr


def test_short_load_through_the_proxy_with_the_token_from_the_env_file(
    cloud: Cloud, tmp_path: Path
) -> None:
    env = make_cloud_env(tmp_path, cloud, cloud.token)
    refused, before = cloud.ingress.refused, cloud.ingress.requests
    out = io.StringIO()
    result = audit_run(env, drive(env, vus=4, duration="3s", ramp="0s", seats=15, out=out))
    text = out.getvalue()
    assert result.summary.outcomes["unexpected"] == 0, text[-2000:]
    assert result.summary.outcomes["confirmed"] > 0
    assert cloud.ingress.requests - before >= result.summary.requests
    assert cloud.ingress.refused == refused
    assert result.audit.ok and "state invariants only" in " ".join(result.audit.notes)
    assert cloud.token not in text and cloud.token not in json.dumps(result.to_dict())


def test_load_with_a_wrong_token_fails_clearly(cloud: Cloud, tmp_path: Path) -> None:
    env = make_cloud_env(tmp_path, cloud, "tok-wrong")
    out = io.StringIO()
    # k6 sees only 401s (all "unexpected"); then the audit's first admin call is refused.
    with pytest.raises(NexusError, match="token rejected by admin"):
        audit_run(env, drive(env, vus=2, duration="2s", ramp="0s", seats=5, out=out))
    assert "outcome_unexpected" in out.getvalue()
    assert "tok-wrong" not in out.getvalue()
