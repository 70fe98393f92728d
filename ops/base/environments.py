"""Environment inventory: `environments/NAME.toml` plus secrets from the process
environment, `.env.NAME` and `.env` (python-dotenv; the process environment wins).

Each TOML section is a pydantic model (`extra="forbid"`): `env.settings.restate.partitions`,
`env.settings.service.hold_seconds`, ... say exactly what the file says, defaults filled
in. What the toolkit derives from them (endpoints, ports, paths, the token) are properties
of `Environment`: `env.ingress`, `env.admin`, `env.service`, `env.gateway`, ...
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Self, get_args
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

from ops.base.errors import ConfigError, SecretMissing

PROJECT_ROOT = Path(__file__).resolve().parents[2]
RESTATE_VERSION = "1.7.12"

Runtime = Literal["binary", "docker", "external", "cluster"]
ServiceMode = Literal["process", "container", "url", "connect"]
GatewayMode = Literal["mock", "external"]
SnapshotStore = Literal["moto", "off"]
PortKind = Literal["ingress", "admin", "node"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)
SERVICE_MODES: tuple[str, ...] = get_args(ServiceMode)
GATEWAY_MODES: tuple[str, ...] = get_args(GatewayMode)
SNAPSHOT_STORES: tuple[str, ...] = get_args(SnapshotStore)

# Error types of our validators: a predicate about one key ("must be ...") and a whole
# sentence about several keys (a rule of the section).
_BAD_VALUE = "nexus_bad_value"
_BROKEN_RULE = "nexus_broken_rule"


def _bad_value(message: str) -> PydanticCustomError:
    return PydanticCustomError(_BAD_VALUE, "{message}", {"message": message})


def _broken_rule(message: str) -> PydanticCustomError:
    return PydanticCustomError(_BROKEN_RULE, "{message}", {"message": message})


# --- values: strict, no coercion (TOML already typed them) ---------------------------


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise _bad_value(f"must be a string, got {value!r}")
    return value


def _positive_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad_value(f"must be a positive integer, got {value!r}")
    return value


def _non_negative_float(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _bad_value(f"must be a number >= 0, got {value!r}")
    return float(value)


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise _bad_value(f"must be true or false, got {value!r}")
    return value


def _ports(value: object) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 0 < v < 65536 for v in value
    ):
        raise _bad_value(f"must be a list of port numbers, got {value!r}")
    return list(value)


def _port_range(value: object) -> list[int]:
    ports = _ports(value)
    if ports and (len(ports) != 2 or ports[0] > ports[1]):
        raise _bad_value(f"must be [first, last] with first <= last, got {ports!r}")
    return ports


def _url_problem(value: str, shown: str | None = None) -> str | None:
    """What is wrong with `value` as an http(s) URL (quoting `shown`, by default the value
    itself), or None."""
    quoted = repr(value if shown is None else shown)
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        return f"is not a URL ({exc}): {quoted}"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"must be an http(s) URL, got {quoted}"
    try:
        _ = parts.port
    except ValueError:
        return f"has a bad port: {quoted}"
    return None


def _http_url(value: object) -> str:
    text = _text(value)
    problem = _url_problem(text)
    if problem:
        raise _bad_value(problem)
    return text


def _one_of(choices: tuple[str, ...]) -> Callable[[object], str]:
    def check(value: object) -> str:
        if value not in choices:
            raise _bad_value(f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return check


Text = Annotated[str, PlainValidator(_text)]
HttpUrl = Annotated[str, PlainValidator(_http_url)]
PositiveInt = Annotated[int, PlainValidator(_positive_int)]
NonNegativeFloat = Annotated[float, PlainValidator(_non_negative_float)]
Flag = Annotated[bool, PlainValidator(_flag)]
Ports = Annotated[list[int], PlainValidator(_ports)]
PortRange = Annotated[list[int], PlainValidator(_port_range)]


# --- sections ------------------------------------------------------------------------


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RestateSettings(_Section):
    """`[restate]`: which server runs and how to reach it."""

    runtime: Annotated[Runtime, PlainValidator(_one_of(RUNTIMES))]
    ingress_url: HttpUrl
    admin_url: HttpUrl
    token_env: Text = ""  # the variable holding the bearer token, if any
    version: Text = RESTATE_VERSION
    image: Text = f"docker.io/restatedev/restate:{RESTATE_VERSION}"
    node_port: PositiveInt = 5122
    partitions: PositiveInt = 4


class ServiceSettings(_Section):
    """`[service]`: how the service runs and what Restate is told to call."""

    mode: Annotated[ServiceMode, PlainValidator(_one_of(SERVICE_MODES))]
    url: Text  # may hold `{version}`; an http(s) URL unless mode = "connect"
    port_range: PortRange = Field(default_factory=list)  # default: url's port + 0..19
    hold_seconds: NonNegativeFloat = 900.0
    signing: Flag = False
    identity_key_env: Text = ""
    connect_name: Text = "nexus"
    connect_key_env: Text = "RESTATE_CONNECT_KEY"

    @model_validator(mode="after")
    def _url_is_http_unless_connect(self) -> Self:
        if self.mode != "connect":
            problem = _url_problem(self.url.replace("{version}", "v"), shown=self.url)
            if problem:
                raise _broken_rule(f"service.url {problem}")
        return self


class GatewaySettings(_Section):
    """`[gateway]`: the payment gateway the service charges."""

    mode: Annotated[GatewayMode, PlainValidator(_one_of(GATEWAY_MODES))] = "mock"
    url: HttpUrl = "http://127.0.0.1:9081"
    latency_ms: NonNegativeFloat = 0.0  # the mock gateway's added latency


class StateSettings(_Section):
    """`[state]`: where logs, PID files and data live."""

    dir: Text = ""  # default: .nexus/<env>, relative to the project root


class ClusterSettings(_Section):
    """`[cluster]`: the nodes of a `cluster` runtime."""

    nodes: PositiveInt = 3
    replication: PositiveInt = 2
    ingress_ports: Ports = Field(default_factory=list)  # default: ingress_url's port + i
    admin_ports: Ports = Field(default_factory=list)  # default: admin_url's port + i
    node_ports: Ports = Field(default_factory=list)  # default: restate.node_port + i

    @model_validator(mode="after")
    def _fits_the_nodes(self) -> Self:
        if self.replication > self.nodes:
            raise _broken_rule("cluster.replication must not exceed cluster.nodes")
        for kind in ("ingress_ports", "admin_ports", "node_ports"):
            if getattr(self, kind) and len(getattr(self, kind)) != self.nodes:
                raise _broken_rule(f"cluster.{kind} must list {self.nodes} ports (one per node)")
        return self


class SnapshotSettings(_Section):
    """`[snapshots]`: partition snapshots of a `cluster` runtime, kept in an S3-compatible
    object store that the toolkit runs on loopback (`store = "moto"`), or none ("off")."""

    store: Annotated[SnapshotStore, PlainValidator(_one_of(SNAPSHOT_STORES))] = "moto"
    url: Text = ""  # the store's endpoint; default: the gateway's port + 1, same host
    bucket: Text = "nexus-snapshots"
    prefix: Text = ""  # default: the environment's name
    interval_records: PositiveInt = 5000  # a snapshot every N log records per partition
    interval: Text = ""  # and/or every so long, e.g. "5m" (restate's duration syntax)
    retained: PositiveInt = 2  # snapshots kept per partition

    @model_validator(mode="after")
    def _url_is_http(self) -> Self:
        problem = _url_problem(self.url) if self.url else None
        if problem:
            raise _broken_rule(f"snapshots.url {problem}")
        if not self.bucket.replace("-", "").isalnum() or self.bucket != self.bucket.lower():
            raise _broken_rule(f"snapshots.bucket must be lowercase letters, digits and -,"
                               f" got {self.bucket!r}")  # fmt: skip
        return self


class EnvironmentSettings(BaseModel):
    """One environment file, validated, every default filled in."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    restate: RestateSettings
    service: ServiceSettings
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    state: StateSettings = Field(default_factory=StateSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    snapshots: SnapshotSettings = Field(default_factory=SnapshotSettings)

    @model_validator(mode="before")
    @classmethod
    def _hosted_service_has_external_gateway(cls, data: Any) -> Any:
        """gateway.mode defaults to "external" when service.mode = "url": a service hosted
        elsewhere charges its own gateway, never a mock on this machine."""
        if not isinstance(data, dict):
            return data
        service, gateway = data.get("service"), data.get("gateway", {})
        if (
            isinstance(service, dict)
            and service.get("mode") == "url"
            and isinstance(gateway, dict)
            and "mode" not in gateway
        ):
            return {**data, "gateway": {**gateway, "mode": "external"}}
        return data


SECTIONS: dict[str, type[BaseModel]] = {
    "restate": RestateSettings,
    "service": ServiceSettings,
    "gateway": GatewaySettings,
    "state": StateSettings,
    "cluster": ClusterSettings,
    "snapshots": SnapshotSettings,
}


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
    """One environment: its typed `settings` (the file) and what derives from them."""

    name: str
    file: Path
    root: Path
    settings: EnvironmentSettings
    secrets: Mapping[str, str] = field(repr=False, default_factory=dict)

    @property
    def runtime(self) -> Runtime:
        return self.settings.restate.runtime

    @property
    def service_mode(self) -> ServiceMode:
        return self.settings.service.mode

    @property
    def gateway_mode(self) -> GatewayMode:
        return self.settings.gateway.mode

    @property
    def ingress(self) -> Endpoint:
        return Endpoint(self.settings.restate.ingress_url.rstrip("/"))

    @property
    def admin(self) -> Endpoint:
        return Endpoint(self.settings.restate.admin_url.rstrip("/"))

    @property
    def service(self) -> Endpoint:
        """The service URL as an endpoint (`{version}` left in; see `Release.url`)."""
        return Endpoint(self.settings.service.url.rstrip("/"))

    @property
    def gateway(self) -> Endpoint:
        return Endpoint(self.settings.gateway.url.rstrip("/"))

    @property
    def service_ports(self) -> list[int]:
        """Ports a new service version may take: `[service] port_range`, by default the
        service URL's port and the 19 after it; never a port another component uses."""
        given = self.settings.service.port_range
        first, last = given or [self.service.port, self.service.port + 19]
        taken = {self.ingress.port, self.admin.port, self.gateway.port}
        taken.add(self.settings.restate.node_port)
        if self.runtime == "cluster":
            for kind in get_args(PortKind):
                taken.update(self.cluster_ports(kind))
            if self.settings.snapshots.store != "off":
                taken.add(self.snapshot_store.port)
        return [p for p in range(first, min(last, 65535) + 1) if p not in taken]

    @property
    def state_dir(self) -> Path:
        path = Path(self.settings.state.dir or f".nexus/{self.name}")
        return path if path.is_absolute() else self.root / path

    @property
    def npm_dir(self) -> Path:
        """Where the pinned restate-server npm package is installed (shared by envs)."""
        version = self.settings.restate.version
        return self.root / ".nexus" / "npm" / f"restate-server-{version}"

    @property
    def snapshot_store(self) -> Endpoint:
        """The object store's endpoint: `[snapshots] url`, or the gateway's port + 1."""
        url = self.settings.snapshots.url
        return Endpoint(url.rstrip("/") or f"http://{self.ingress.host}:{self.gateway.port + 1}")

    @property
    def ingress_urls(self) -> tuple[str, ...]:
        """Every ingress requests may go to: one, or each node of a cluster."""
        if self.runtime != "cluster":
            return (self.ingress.url,)
        return tuple(f"http://{self.ingress.host}:{port}" for port in self.cluster_ports("ingress"))

    def cluster_ports(self, kind: PortKind) -> list[int]:
        """Ports of every cluster node for `ingress`, `admin` or `node`."""
        cluster = self.settings.cluster
        given, first = {
            "ingress": (cluster.ingress_ports, self.ingress.port),
            "admin": (cluster.admin_ports, self.admin.port),
            "node": (cluster.node_ports, self.settings.restate.node_port),
        }[kind]
        return list(given) or [first + i for i in range(cluster.nodes)]

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
        variable = self.settings.restate.token_env
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
    return Environment(
        name=name, file=path, root=root, settings=parse(path, raw), secrets=_secrets(root, name)
    )


def parse(path: Path, raw: Mapping[str, Any]) -> EnvironmentSettings:
    """Validate a parsed TOML document; every problem is named with `path` and its key."""
    try:
        return EnvironmentSettings.model_validate(dict(raw))
    except ValidationError as exc:
        problems = dict.fromkeys(line for error in exc.errors() for line in _describe(error))
        raise ConfigError("\n".join(f"{path}: {problem}" for problem in problems)) from None


def _describe(error: ErrorDetails) -> list[str]:
    """One pydantic error in the file's own words: `section.key` and what is wrong."""
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc)
    kind = error["type"]
    if kind == "extra_forbidden" and len(loc) == 1:
        return [f"unknown section [{key}] (known: {', '.join(SECTIONS)})"]
    if kind == "extra_forbidden":
        known = ", ".join(SECTIONS[loc[0]].model_fields)
        return [f"unknown key {key} (known: {known})"]
    if kind == "missing" and len(loc) == 1:  # a whole required section
        required = [k for k, f in SECTIONS[loc[0]].model_fields.items() if f.is_required()]
        return [f"missing required key {key}.{k}" for k in required]
    if kind == "missing":
        return [f"missing required key {key}"]
    if kind == "model_type" and len(loc) == 1:
        return [f"[{key}] must be a table"]
    if kind == _BROKEN_RULE:
        return [error["msg"]]
    if kind == _BAD_VALUE:
        return [f"{key} {error['msg']}"]
    return [f"{key}: {error['msg']}"]


def _secrets(root: Path, name: str) -> dict[str, str]:
    merged: dict[str, str] = {}
    for file in (root / ".env", root / f".env.{name}"):
        if file.is_file():
            merged.update({k: v for k, v in dotenv_values(file).items() if v is not None})
    merged.update(os.environ)
    return merged
