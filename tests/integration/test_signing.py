"""Request signing end to end: deploy makes an ed25519 key pair, restate-server signs every
request with it, and the service refuses anything unsigned."""

from __future__ import annotations

import io
import stat
import uuid

import httpx
import pytest

from ops.base.steps import Status
from ops.release.stack import Stack, deploy, down
from tests.conftest import EnvFactory

pytestmark = pytest.mark.integration


def test_signed_stack_serves_restate_and_refuses_unsigned_calls(make_env: EnvFactory) -> None:
    env = make_env("signed", service="signing = true")
    assert env.settings.service.signing is True
    stack = Stack(env)
    signing = env.state_dir / "signing"
    try:
        first_out = io.StringIO()
        first = deploy(env, out=first_out)
        text = first_out.getvalue()
        assert not first.failed, text
        results = {r.step: r for r in first.results}
        assert first.results[0].step == "signing"
        assert results["signing"].status is Status.CHANGED
        assert "generated key pair publickeyv1_" in results["signing"].message

        private = signing / "private.pem"
        assert private.is_file()
        assert stat.S_IMODE(private.stat().st_mode) == 0o600
        kid = (signing / "public.txt").read_text().strip()
        assert kid.startswith("publickeyv1_") and kid in results["signing"].message
        assert "PRIVATE KEY" not in text
        config = (env.state_dir / "restate.toml").read_text()
        assert f'request-identity-private-key-pem-file = "{private}"' in config

        # Through restate-server (which signs): the contract works.
        seat = f"signed-{uuid.uuid4().hex[:8]}:a1"
        resp = stack.ingress.call(
            "Checkout", "process", {"ticketId": seat, "userId": "alice"}, timeout=30
        )
        assert resp.status_code == 200, resp.text
        assert resp.json() == "Booking Confirmed"
        assert stack.ingress.call("Ticket", "get", key=seat).json()["status"] == "SOLD"

        # Straight to the service, unsigned: refused. Health stays open for probes.
        svc = env.service.url
        headers = {"content-type": "application/vnd.restate.invocation.v1"}
        assert httpx.post(f"{svc}/invoke/Ticket/get", headers=headers).status_code == 401
        assert httpx.post(f"{svc}/invoke/Checkout/process", headers=headers).status_code == 401
        discover = httpx.get(
            f"{svc}/discover",
            headers={"accept": "application/vnd.restate.endpointmanifest.v1+json"},
        )
        assert discover.status_code == 401
        forged = httpx.get(
            f"{svc}/discover", headers={"x-restate-signature-scheme": "v1", "x-restate-jwt-v1": "x"}
        )
        assert forged.status_code == 401
        assert httpx.get(f"{svc}/health").status_code == 200

        second_out = io.StringIO()
        second = deploy(env, out=second_out)
        assert not second.failed, second_out.getvalue()
        recap = second_out.getvalue().strip().splitlines()[-1]
        assert "changed=0" in recap, second_out.getvalue()
        assert {r.step: r.status for r in second.results}["signing"] is Status.OK
        assert (signing / "public.txt").read_text().strip() == kid  # same key kept
    finally:
        gone = io.StringIO()
        down(env, purge=True, out=gone)
    assert "failed=0" in gone.getvalue().strip().splitlines()[-1]
    assert not env.state_dir.exists()
