"""Environment inventory: `environments/NAME.toml` plus secrets from the process
environment, `.env.NAME` and `.env` (python-dotenv; the process environment wins)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from ops.errors import ConfigError, SecretMissing

PROJECT_ROOT = Path(__file__).resolve().parent.parent
RESTATE_VERSION = "1.7.12"

RUNTIMES = ("binary", "docker", "external", "cluster")
SERVICE_MODES = ("process", "url", "connect")
GATEWAY_MODES = ("mock", "external")

# section -> key -> default; the default's type is the key's type.
SCHEMA: dict[str, dict[str, Any]] = {
    "restate": {
        "runtime": "binary",
        "ingress_url": "http://127.0.0.1:8080",
        "admin_url": "http://127.0.0.1:9070",
        "token_env": "",
        "version": RESTATE_VERSION,
        "image": f"docker.io/restatedev/restate:{RESTATE_VERSION}",
        "node_port": 5122,
        "partitions": 4,
    },
    "service": {
        "mode": "process",
        "url": "http://127.0.0.1:9080",
        "port_range": [],  # [first, last] ports for versions; default: url's port + 0..19
        "hold_seconds": 900.0,
        "signing": False,
        "identity_key_env": "",
        "connect_name": "nexus",
        "connect_key_env": "RESTATE_CONNECT_KEY",
    },
    "gateway": {
        "mode": "mock",
        "url": "http://127.0.0.1:9081",
        "latency_ms": 0.0,
    },
    "state": {
        "dir": "",
    },
    "cluster": {
        "nodes": 3,
        "replication": 2,
        "ingress_ports": [],  # one port per node; default: ingress_url's port + i
        "admin_ports": [],  # default: admin_url's port + i
        "node_ports": [],  # default: restate.node_port + i
    },
}
URL_KEYS = ("restate.ingress_url", "restate.admin_url", "gateway.url")
REQUIRED = {"restate": ("runtime", "ingress_url", "admin_url"), "service": ("mode", "url")}


@dataclass(frozen=True)
class Endpoint:
    """A loopback or remote HTTP endpoint, split for binding."""

    url: str

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (443 if parts.scheme == "https" else 80)

    @property
    def bind(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Environment:
    """One environment, fully defaulted and validated."""

    name: str
    file: Path
    root: Path
    settings: Mapping[str, Mapping[str, Any]]
    secrets: Mapping[str, str] = field(repr=False, default_factory=dict)

    def get(self, section: str, key: str) -> Any:
        return self.settings[section][key]

    @property
    def runtime(self) -> str:
        return str(self.get("restate", "runtime"))

    @property
    def ingress(self) -> Endpoint:
        return Endpoint(str(self.get("restate", "ingress_url")).rstrip("/"))

    @property
    def admin(self) -> Endpoint:
        return Endpoint(str(self.get("restate", "admin_url")).rstrip("/"))

    @property
    def service(self) -> Endpoint:
        return Endpoint(str(self.get("service", "url")).rstrip("/"))

    @property
    def service_ports(self) -> list[int]:
        """Ports a new service version may take: `[service] port_range`, by default the
        service URL's port and the 19 after it; never a port another component uses."""
        given: list[int] = list(self.get("service", "port_range"))
        first, last = given or [self.service.port, self.service.port + 19]
        taken = {self.ingress.port, self.admin.port, self.gateway.port}
        taken.add(int(self.get("restate", "node_port")))
        if self.runtime == "cluster":
            for kind in ("ingress", "admin", "node"):
                taken.update(self.cluster_ports(kind))
        return [p for p in range(first, min(last, 65535) + 1) if p not in taken]

    @property
    def service_mode(self) -> str:
        return str(self.get("service", "mode"))

    @property
    def gateway(self) -> Endpoint:
        return Endpoint(str(self.get("gateway", "url")).rstrip("/"))

    @property
    def gateway_mode(self) -> str:
        return str(self.get("gateway", "mode"))

    @property
    def state_dir(self) -> Path:
        raw = str(self.get("state", "dir")) or f".nexus/{self.name}"
        path = Path(raw)
        return path if path.is_absolute() else self.root / path

    @property
    def npm_dir(self) -> Path:
        """Where the pinned restate-server npm package is installed (shared by envs)."""
        return self.root / ".nexus" / "npm" / f"restate-server-{self.get('restate', 'version')}"

    @property
    def ingress_urls(self) -> tuple[str, ...]:
        """Every ingress requests may go to: one, or each node of a cluster."""
        if self.runtime != "cluster":
            return (self.ingress.url,)
        return tuple(f"http://{self.ingress.host}:{port}" for port in self.cluster_ports("ingress"))

    def cluster_ports(self, kind: str) -> list[int]:
        """Ports of every cluster node for `ingress`, `admin` or `node`."""
        given: list[int] = list(self.get("cluster", f"{kind}_ports"))
        if given:
            return given
        first = {
            "ingress": self.ingress.port,
            "admin": self.admin.port,
            "node": int(self.get("restate", "node_port")),
        }[kind]
        return [first + i for i in range(int(self.get("cluster", "nodes")))]

    def secret(self, variable: str) -> str | None:
        """A secret's value, or None when it is set nowhere."""
        value = self.secrets.get(variable)
        return value if value else None

    def require_secret(self, variable: str, purpose: str) -> str:
        value = self.secret(variable)
        if value is None:
            raise SecretMissing(
                f"{purpose}: variable {variable} is not set (set it in the process environment,"
                f" {self.root / ('.env.' + self.name)} or {self.root / '.env'})"
            )
        return value

    @property
    def token(self) -> str | None:
        """The bearer token for ingress and admin, when the environment names one."""
        variable = str(self.get("restate", "token_env"))
        if not variable:
            return None
        return self.require_secret(variable, f"environment {self.name!r} needs a Restate token")


def environment_file(name_or_path: str, root: Path = PROJECT_ROOT) -> tuple[str, Path]:
    """Resolve `--env`: a name under `environments/` or a path to a TOML file."""
    if name_or_path.endswith(".toml") or os.sep in name_or_path:
        path = Path(name_or_path).resolve()
        return path.stem, path
    if not name_or_path.replace("-", "").replace("_", "").isalnum():
        raise ConfigError(f"bad environment name {name_or_path!r}: use letters, digits, - and _")
    return name_or_path, root / "environments" / f"{name_or_path}.toml"


def load(name_or_path: str = "local", root: Path = PROJECT_ROOT) -> Environment:
    """Load and validate an environment; errors name the file and the key."""
    name, path = environment_file(name_or_path, root)
    if not path.is_file():
        known = sorted(p.stem for p in (root / "environments").glob("*.toml"))
        raise ConfigError(f"{path}: environment file not found (known: {', '.join(known)})")
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    settings = _validate(path, raw)
    return Environment(
        name=name, file=path, root=root, settings=settings, secrets=_secrets(root, name)
    )


def _validate(path: Path, raw: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    settings: dict[str, dict[str, Any]] = {}
    for section, value in raw.items():
        if section not in SCHEMA:
            raise ConfigError(f"{path}: unknown section [{section}] (known: {', '.join(SCHEMA)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: [{section}] must be a table")
        for key in value:
            if key not in SCHEMA[section]:
                raise ConfigError(
                    f"{path}: unknown key {section}.{key} (known: {', '.join(SCHEMA[section])})"
                )
    for section, keys in REQUIRED.items():
        for key in keys:
            if key not in raw.get(section, {}):
                raise ConfigError(f"{path}: missing required key {section}.{key}")
    for section, defaults in SCHEMA.items():
        given = raw.get(section, {})
        settings[section] = {}
        for key, default in defaults.items():
            settings[section][key] = _coerce(
                path, f"{section}.{key}", given.get(key, default), default
            )
    if "mode" not in raw.get("gateway", {}) and settings["service"]["mode"] == "url":
        # A service hosted elsewhere charges its own gateway, never a mock on this machine.
        settings["gateway"]["mode"] = "external"
    _check_choices(path, settings)
    return settings


def _coerce(path: Path, key: str, value: Any, default: Any) -> Any:
    if isinstance(default, list):
        if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536 for v in value
        ):
            raise ConfigError(f"{path}: {key} must be a list of port numbers, got {value!r}")
        return list(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {key} must be true or false, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{path}: {key} must be a number >= 0, got {value!r}")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"{path}: {key} must be a positive integer, got {value!r}")
        return value
    if not isinstance(value, str):
        raise ConfigError(f"{path}: {key} must be a string, got {value!r}")
    if key in URL_KEYS:
        _check_url(path, key, value)
    return value


def _check_url(path: Path, key: str, value: str) -> None:
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise ConfigError(f"{path}: {key} is not a URL ({exc}): {value!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{path}: {key} must be an http(s) URL, got {value!r}")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"{path}: {key} has a bad port: {value!r}") from None


def _check_choices(path: Path, settings: dict[str, dict[str, Any]]) -> None:
    for key, choices in (
        (("restate", "runtime"), RUNTIMES),
        (("service", "mode"), SERVICE_MODES),
        (("gateway", "mode"), GATEWAY_MODES),
    ):
        value = settings[key[0]][key[1]]
        if value not in choices:
            raise ConfigError(
                f"{path}: {key[0]}.{key[1]} must be one of {', '.join(choices)}, got {value!r}"
            )
    cluster = settings["cluster"]
    if cluster["replication"] > cluster["nodes"]:
        raise ConfigError(f"{path}: cluster.replication must not exceed cluster.nodes")
    for kind in ("ingress_ports", "admin_ports", "node_ports"):
        if cluster[kind] and len(cluster[kind]) != cluster["nodes"]:
            raise ConfigError(
                f"{path}: cluster.{kind} must list {cluster['nodes']} ports (one per node)"
            )
    ports = settings["service"]["port_range"]
    if ports and (len(ports) != 2 or ports[0] > ports[1]):
        raise ConfigError(
            f"{path}: service.port_range must be [first, last] with first <= last, got {ports!r}"
        )
    url = settings["service"]["url"]
    if settings["service"]["mode"] == "connect":
        return
    _check_url(path, "service.url", url.replace("{version}", "v"))


def _secrets(root: Path, name: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    for file in (root / ".env", root / f".env.{name}"):
        if file.is_file():
            merged.update({k: v for k, v in dotenv_values(file).items() if v is not None})
    merged.update(os.environ)
    return merged
