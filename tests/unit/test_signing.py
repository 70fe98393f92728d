"""Request signing without a server: base58, key ids the Restate SDK accepts, the key pair
on disk, restate-server's config, and where the service's public key comes from."""

from __future__ import annotations

import base64
import json
import os
import random
import re
import stat
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ops.base import environments
from ops.base.environments import PROJECT_ROOT, Environment
from ops.base.errors import ConfigError, SecretMissing
from ops.base.processes import free_port
from ops.base.signing import base58, ensure_key_pair, key_id
from ops.base.steps import Status, StepContext
from ops.release.stack import Stack, status_lines
from ops.server.server_config import server_config
from tests.conftest import env_toml

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
KID = re.compile(r"^publickeyv1_[1-9A-HJ-NP-Za-km-z]{43,44}$")


def reference_base58(data: bytes) -> str:
    """Bitcoin Core's EncodeBase58: byte-wise carry into a base-58 digit buffer."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    digits: list[int] = []
    for byte in data[zeros:]:
        carry = byte
        for i in range(len(digits)):
            carry += digits[i] << 8
            digits[i], carry = carry % 58, carry // 58
        while carry:
            digits.append(carry % 58)
            carry //= 58
    return "1" * zeros + "".join(ALPHABET[d] for d in reversed(digits))


# Published vectors (Bitcoin Core's src/test/data/base58_encode_decode.json and others).
VECTORS = [
    ("", ""),
    ("00", "1"),
    ("0000", "11"),
    ("000001", "112"),
    ("00000000000000000000", "1111111111"),
    ("61", "2g"),
    ("626262", "a3gV"),
    ("636363", "aPEr"),
    ("73696d706c792061206c6f6e6720737472696e67", "2cFupjhnEsSn59qHXstmK2ffpLv2"),
    ("00eb15231dfceb60925886b67d065299925915aeb172c06647", "1NS17iag9jJgTHD1VXjvLCEnZuQ3rJDE9L"),
    ("516b6fcd0f", "ABnLTmg"),
    ("bf4f89001e670274dd", "3SEo3LWLoPntC"),
    ("572e4794", "3EFU7m"),
    ("ecac89cad93923c02321", "EJDM8drfXA6uyA"),
    ("10c8511e", "Rt5zm"),
    ("68656c6c6f20776f726c64", "StV1DL6CwTryKyV"),  # b"hello world"
]


@pytest.mark.parametrize(("hex_data", "expected"), VECTORS)
def test_base58_known_vectors(hex_data: str, expected: str) -> None:
    data = bytes.fromhex(hex_data)
    assert base58(data) == expected
    assert reference_base58(data) == expected


def test_base58_matches_the_reference_on_random_input() -> None:
    rng = random.Random(58)
    for _ in range(500):
        size = rng.randrange(0, 40)
        data = bytes(rng.randrange(256) for _ in range(size))
        if rng.random() < 0.3:
            data = b"\0" * rng.randrange(1, 4) + data
        assert base58(data) == reference_base58(data), data.hex()


def _pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_key_id_is_publickeyv1_and_base58_of_the_raw_public_key() -> None:
    for _ in range(50):
        key = Ed25519PrivateKey.generate()
        kid = key_id(_pem(key))
        assert KID.match(kid), kid
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        assert kid == "publickeyv1_" + reference_base58(raw)


def test_key_id_refuses_a_key_that_is_not_ed25519() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ConfigError, match="ed25519"):
        key_id(pem)


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def test_the_restate_sdk_accepts_the_key_id_and_verifies_what_the_key_signs() -> None:
    """The SDK's own verifier (what `restate.app(identity_keys=...)` uses) takes our key id
    and checks a v1 request-identity JWT signed with the private key."""
    from restate._internal import (  # type: ignore[import-not-found]
        IdentityVerificationException,
        PyIdentityVerifier,
    )

    key = Ed25519PrivateKey.generate()
    kid = key_id(_pem(key))
    verifier = PyIdentityVerifier([kid])
    now = int(time.time())
    header = _b64(json.dumps({"typ": "JWT", "alg": "EdDSA", "kid": kid}).encode())
    claims = {"aud": "/invoke/Ticket/get", "nbf": now - 5, "iat": now, "exp": now + 60}
    payload = _b64(json.dumps(claims).encode())
    jwt = b".".join([header, payload, _b64(key.sign(header + b"." + payload))]).decode()
    signed = [("x-restate-signature-scheme", "v1"), ("x-restate-jwt-v1", jwt)]
    verifier.verify(signed, "/invoke/Ticket/get")
    with pytest.raises(IdentityVerificationException):
        verifier.verify([], "/invoke/Ticket/get")
    other = key_id(_pem(Ed25519PrivateKey.generate()))
    with pytest.raises(IdentityVerificationException):
        PyIdentityVerifier([other]).verify(signed, "/invoke/Ticket/get")


def test_ensure_key_pair_creates_once_with_mode_0600(tmp_path: Path) -> None:
    folder = tmp_path / "state" / "signing"
    old = os.umask(0o022)
    try:
        private, kid, created = ensure_key_pair(folder)
    finally:
        os.umask(old)
    assert created is True
    assert private == folder / "private.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert KID.match(kid)
    assert (folder / "public.txt").read_text() == kid + "\n"
    assert key_id(private.read_bytes()) == kid
    pem = private.read_bytes()

    again_private, again_kid, again_created = ensure_key_pair(folder)
    assert (again_private, again_kid, again_created) == (private, kid, False)
    assert private.read_bytes() == pem
    assert stat.S_IMODE(private.stat().st_mode) == 0o600

    (folder / "public.txt").write_text("stale\n")  # the public half is always re-derived
    assert ensure_key_pair(folder)[1] == kid
    assert (folder / "public.txt").read_text() == kid + "\n"


# --- environments with signing on/off ---------------------------------------------------


def _env(
    tmp_path: Path, service: str = "", runtime: str = "binary", name: str = "sig"
) -> Environment:
    root = tmp_path / "root"
    (root / "environments").mkdir(parents=True, exist_ok=True)
    text = env_toml(tmp_path / f"state-{name}", service=service).replace(
        'runtime = "binary"', f'runtime = "{runtime}"'
    )
    file = tmp_path / f"{name}.toml"
    file.write_text(text)
    return environments.load(str(file), root=root)


def test_server_config_names_the_private_key_only_when_signing_is_on(tmp_path: Path) -> None:
    off = _env(tmp_path, name="off")
    assert "request-identity-private-key-pem-file" not in server_config(off)
    assert "[worker.invoker]" not in server_config(off)

    on = _env(tmp_path, service="signing = true", name="on")
    config = server_config(on)
    pem = on.state_dir / "signing" / "private.pem"
    assert f'request-identity-private-key-pem-file = "{pem}"' in config
    section = config.split("[worker.invoker]", 1)[1]
    assert "request-identity-private-key-pem-file" in section
    assert "PRIVATE KEY" not in config  # a path, never the key itself


def test_signing_step_generates_once_and_check_mode_writes_nothing(tmp_path: Path) -> None:
    env = _env(tmp_path, service="signing = true")
    stack = Stack(env)
    assert stack.deploy_steps()[0][0] == "signing"
    assert "NEXUS_IDENTITY_KEYS" not in stack.service_env()

    would = stack.signing_step(StepContext(check=True))
    assert would.status is Status.CHANGED and "would generate" in would.message
    assert not stack.signing_dir.exists()

    made = stack.signing_step(StepContext())
    assert made.status is Status.CHANGED
    kid = (stack.signing_dir / "public.txt").read_text().strip()
    assert kid in made.message
    assert stack.identity_key() == kid
    assert stack.service_env()["NEXUS_IDENTITY_KEYS"] == kid

    again = stack.signing_step(StepContext())
    assert again.status is Status.OK and kid in again.message


def test_signing_off_adds_no_step_and_no_key(tmp_path: Path) -> None:
    stack = Stack(_env(tmp_path))
    assert "signing" not in [name for name, _ in stack.deploy_steps()]
    assert stack.identity_key() is None
    assert stack.signing_step(StepContext()).status is Status.SKIPPED
    assert "NEXUS_IDENTITY_KEYS" not in stack.service_env()


CLOUD_KID = "publickeyv1_" + "2" * 44


def test_external_runtime_takes_the_public_key_from_the_env_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESTATE_IDENTITY_KEY", raising=False)
    monkeypatch.delenv("CLOUD_KID", raising=False)
    env = _env(tmp_path, service="signing = true", runtime="external", name="cloudsig")
    stack = Stack(env)
    with pytest.raises(SecretMissing, match="RESTATE_IDENTITY_KEY"):
        stack.identity_key()
    with pytest.raises(SecretMissing, match="RESTATE_IDENTITY_KEY"):
        stack.signing_step(StepContext())

    (env.root / ".env.cloudsig").write_text(f"RESTATE_IDENTITY_KEY={CLOUD_KID}\n")
    env = environments.load(str(env.file), root=env.root)
    stack = Stack(env)
    assert stack.identity_key() == CLOUD_KID
    step = stack.signing_step(StepContext())
    assert step.status is Status.OK and CLOUD_KID in step.message
    assert stack.service_env()["NEXUS_IDENTITY_KEYS"] == CLOUD_KID
    assert not stack.signing_dir.exists()  # Cloud keeps the private key: nothing made here


def test_identity_key_env_names_another_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESTATE_IDENTITY_KEY", raising=False)
    monkeypatch.setenv("CLOUD_KID", CLOUD_KID)
    env = _env(
        tmp_path,
        service='signing = true\nidentity_key_env = "CLOUD_KID"',
        runtime="external",
        name="custom",
    )
    assert Stack(env).identity_key() == CLOUD_KID
    monkeypatch.delenv("CLOUD_KID")
    env = environments.load(str(env.file), root=env.root)
    with pytest.raises(SecretMissing, match="CLOUD_KID"):
        Stack(env).identity_key()


def test_status_of_a_signed_cloud_env_works_without_the_public_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RESTATE_IDENTITY_KEY", raising=False)
    file = tmp_path / "sigcloud.toml"
    file.write_text(
        f"""
[restate]
runtime = "external"
ingress_url = "http://127.0.0.1:{free_port()}"
admin_url = "http://127.0.0.1:{free_port()}"
[service]
mode = "url"
url = "https://nexus-service.example.com"
signing = true
[gateway]
mode = "external"
url = "https://payments.example.com"
[state]
dir = "{tmp_path / "state"}"
"""
    )
    env = environments.load(str(file), root=PROJECT_ROOT)  # status reads the project's sources
    assert env.secret("RESTATE_IDENTITY_KEY") is None
    lines = status_lines(env)
    assert any("unreachable" in line or "DOWN" in line for line in lines)


def test_a_corrupt_private_key_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    env = _env(tmp_path, service="signing = true")
    stack = Stack(env)
    stack.signing_dir.mkdir(parents=True)
    (stack.signing_dir / "private.pem").write_text("-----BEGIN PRIVATE KEY-----\nnope\n")
    for ctx in (StepContext(check=True), StepContext()):
        with pytest.raises(ConfigError) as info:
            stack.signing_step(ctx)
        assert str(stack.signing_dir / "private.pem") in str(info.value)
    assert not (stack.signing_dir / "public.txt").exists()


def test_check_mode_leaves_an_existing_key_pair_untouched(tmp_path: Path) -> None:
    env = _env(tmp_path, service="signing = true")
    stack = Stack(env)
    stack.signing_step(StepContext())
    public = stack.signing_dir / "public.txt"
    public.unlink()
    assert stack.signing_step(StepContext(check=True)).status is Status.OK
    assert not public.exists()
