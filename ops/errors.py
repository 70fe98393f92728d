"""The toolkit's exception tree: every expected failure is a `NexusError` with a message
that says what is wrong and, where there is one, which file or log to read."""

from __future__ import annotations

from pathlib import Path


class NexusError(Exception):
    """Base of every failure the toolkit reports to its user."""

    def __init__(self, message: str, *, log: Path | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.log = log

    def __str__(self) -> str:
        return self.message if self.log is None else f"{self.message} (log: {self.log})"


class ConfigError(NexusError):
    """An environment file is missing, unreadable or holds a bad key or value."""


class SecretMissing(ConfigError):
    """A variable named by the environment is set nowhere."""


class ProcessError(NexusError):
    """A managed process did not start, stop or become ready."""


class PortInUse(ProcessError):
    """Something we did not start already listens on a port we need."""


class RuntimeUnavailable(NexusError):
    """The selected runtime cannot run here (no Docker engine, no npm, ...)."""


class ApiError(NexusError):
    """The Restate admin API or ingress answered with an error or not at all."""

    def __init__(self, message: str, *, status: int | None = None, log: Path | None = None):
        super().__init__(message, log=log)
        self.status = status


class TokenRejected(ApiError):
    """401/403 from a Restate endpoint: the bearer token is wrong or missing."""


class NotConverged(NexusError):
    """An action ran but a re-read shows the wanted state was not reached."""
