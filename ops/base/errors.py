"""The toolkit's exception tree: every expected failure is a `NexusError` with a message
that says what is wrong and, where there is one, which file or log to read. Catch
`NexusError` to catch them all; `tasks.py` turns one into `error: ...` and exit code 2.

    NexusError
    ├── ConfigError              an environment file or value is wrong
    │   └── SecretMissing        a variable the environment names is set nowhere
    ├── ProcessError             a managed process did not start, stop or become ready
    │   └── PortInUse            someone else listens on a port we need
    ├── RuntimeUnavailable       this machine cannot run it (no Docker, no npm, ...)
    │   └── K6NotFound           no k6 executable
    ├── K6Failed                 k6 ended without a readable summary
    ├── ApiError                 the admin API or ingress answered an error, or nothing
    │   └── TokenRejected        401/403: wrong or missing bearer token
    ├── NotConverged             acted, but a re-read shows the wanted state was not reached
    ├── Skip                     a check that cannot apply to this environment
    └── CheckFailed              a check's expectation did not hold (also an AssertionError)
        └── NodeLossFailed       node-loss found a lost or unresolved booking
"""

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


class K6NotFound(RuntimeUnavailable):
    """The k6 executable could not be located."""


class K6Failed(NexusError):
    """k6 ended without a readable summary."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Skip(NexusError):
    """A check (scenario) that cannot apply to this environment; the reason says why."""


class CheckFailed(NexusError, AssertionError):
    """A check's expectation did not hold. Also an `AssertionError`, so a check run
    inside pytest fails like an `assert`."""


class NodeLossFailed(CheckFailed):
    """node-loss found a lost or unresolved booking."""
