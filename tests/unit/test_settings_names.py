"""The toolkit-service contract: the NEXUS_* variables are named once, in
service/settings_names.py; the service and the stack use them, the image bakes none in
and the service's containers are given exactly the stack's."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.release.images import DOCKERFILE
from ops.release.service_containers import ServiceContainers
from ops.release.stack import Stack
from ops.release.versions import Instance
from service import settings_names as names
from service.config import Settings
from tests.unit.test_chaos import LOCAL, env_from

NAMES = {v for k, v in vars(names).items() if k.isupper()}


def test_settings_read_every_name_from_the_mapping_given() -> None:
    settings = Settings.from_env(
        {
            names.GATEWAY_URL: "http://gw.test:1/",
            names.HOLD_SECONDS: "30",
            names.PAYMENT_TIMEOUT_S: "2",
            names.PAYMENT_ATTEMPTS: "5",
            names.PAYMENT_BACKOFF_S: "0.5",
            names.MAIL_OUTBOX: "/tmp/outbox",
            names.IDENTITY_KEYS: "publickeyv1_a, publickeyv1_b",
        }
    )
    assert settings == Settings(
        gateway_url="http://gw.test:1",
        hold_seconds=30.0,
        payment_timeout_s=2.0,
        payment_attempts=5,
        payment_backoff_s=0.5,
        mail_outbox=Path("/tmp/outbox"),
        identity_keys=("publickeyv1_a", "publickeyv1_b"),
    )
    with pytest.raises(ValueError, match=names.HOLD_SECONDS):
        Settings.from_env({names.HOLD_SECONDS: "soon"})


def test_stack_and_containers_use_only_the_named_variables(tmp_path: Path) -> None:
    text = LOCAL.format(service="hold_seconds = 30", gateway="mock", state=tmp_path / "s")
    env = env_from(tmp_path, text)
    service_env = Stack(env).service_env()
    assert set(service_env) <= NAMES
    assert service_env[names.HOLD_SECONDS] == "30"
    argv = ServiceContainers(env).argv(Instance("0123456789", 9999), "img:tag", service_env)
    given = {argv[i + 1].split("=", 1)[0] for i, a in enumerate(argv) if a == "-e"}
    assert given == set(service_env)
    outbox = service_env[names.MAIL_OUTBOX]
    assert f"{outbox}:{outbox}" in argv  # the same path inside: the same settings
    assert "NEXUS_" not in DOCKERFILE  # a version's settings are given at run time
    assert all(name.startswith("NEXUS_") for name in NAMES) and len(NAMES) == 8
