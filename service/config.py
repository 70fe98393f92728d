"""Service settings, read once from the process environment (the toolkit sets them)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from service import settings_names as names


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment."""

    gateway_url: str
    hold_seconds: float
    payment_timeout_s: float
    payment_attempts: int
    payment_backoff_s: float
    mail_outbox: Path
    identity_keys: tuple[str, ...]
    version: str = "dev"  # the toolkit's id of this build (sources + settings), for logs

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Settings:
        """The settings `environ` gives (the process environment unless told otherwise)."""
        keys = environ.get(names.IDENTITY_KEYS, "")
        return cls(
            gateway_url=environ.get(names.GATEWAY_URL, "http://127.0.0.1:9081").rstrip("/"),
            hold_seconds=_float(environ, names.HOLD_SECONDS, 15 * 60),
            payment_timeout_s=_float(environ, names.PAYMENT_TIMEOUT_S, 3.0),
            payment_attempts=max(1, int(_float(environ, names.PAYMENT_ATTEMPTS, 4))),
            payment_backoff_s=_float(environ, names.PAYMENT_BACKOFF_S, 0.25),
            mail_outbox=Path(environ.get(names.MAIL_OUTBOX, ".nexus/outbox")),
            identity_keys=tuple(k.strip() for k in keys.split(",") if k.strip()),
            version=environ.get(names.VERSION, "dev"),
        )


settings = Settings.from_env()
