"""Request signing: an ed25519 key pair whose private half restate-server signs requests
with, and whose public half (`publickeyv1_<base58>`) the service accepts calls from."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ops.base.errors import ConfigError

_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def signing_dir(state_dir: Path) -> Path:
    """Where an environment keeps its key pair (`<state>/signing`)."""
    return state_dir / "signing"


def private_key_file(folder: Path) -> Path:
    """The private half inside a key pair folder: what restate-server signs with."""
    return folder / "private.pem"


def base58(data: bytes) -> str:
    """Bitcoin-alphabet base58, as Restate uses for key ids."""
    number = int.from_bytes(data, "big")
    digits = ""
    while number:
        number, rest = divmod(number, 58)
        digits = _BASE58[rest] + digits
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + digits


def key_id(private_pem: bytes) -> str:
    """The public key id the service is configured with."""
    try:
        key = serialization.load_pem_private_key(private_pem, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ConfigError(f"request signing: the private key is not readable PEM ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError("request signing needs an ed25519 private key")
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "publickeyv1_" + base58(raw)


def read_key_id(private: Path) -> str:
    """The key id of a private key file; a ConfigError naming the file if it is unreadable."""
    try:
        return key_id(private.read_bytes())
    except ConfigError as exc:
        raise ConfigError(f"{private}: {exc}") from None


def ensure_key_pair(folder: Path) -> tuple[Path, str, bool]:
    """The private key file (created 0600 when missing), its key id, and whether it was made."""
    private = private_key_file(folder)
    created = False
    if not private.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        created = True
    kid = read_key_id(private)
    (folder / "public.txt").write_text(kid + "\n")
    return private, kid, created
