"""Environment inventory (ops/base/environments.py): TOML files, defaults, errors, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from ops.base import environments
from ops.base.environments import Endpoint, environment_file, load
from ops.base.errors import ConfigError, SecretMissing

MINIMAL = """
[restate]
runtime = "binary"
ingress_url = "http://127.0.0.1:8080"
admin_url = "http://127.0.0.1:9070"
token_env = ""

[service]
mode = "process"
url = "http://127.0.0.1:9080"
"""

HOSTED = """
[restate]
runtime = "external"
ingress_url = "https://abc.env.eu.restate.cloud:8080"
admin_url = "https://abc.env.eu.restate.cloud:9070"
token_env = "NEXUS_TEST_TOKEN"

[service]
mode = "url"
url = "https://svc.example.com/"
"""

SECRET = "s3cr3t-value-9f1c"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "environments").mkdir()
    for var in ("NEXUS_TEST_TOKEN", "NEXUS_TEST_A", "NEXUS_TEST_B"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def write(root: Path, name: str, text: str) -> Path:
    path = root / "environments" / f"{name}.toml"
    path.write_text(text)
    return path


def load_error(root: Path, text: str, name: str = "bad") -> str:
    path = write(root, name, text)
    with pytest.raises(ConfigError) as info:
        load(name, root=root)
    message = str(info.value)
    assert str(path) in message
    return message


def test_minimal_file_loads_with_defaults(root: Path) -> None:
    path = write(root, "mini", MINIMAL)
    env = load("mini", root=root)
    assert env.name == "mini"
    assert env.file == path
    assert env.runtime == "binary"
    assert env.service_mode == "process"
    assert env.gateway_mode == "mock"
    assert env.settings.model_dump() == {
        "restate": {
            "runtime": "binary",
            "ingress_url": "http://127.0.0.1:8080",
            "admin_url": "http://127.0.0.1:9070",
            "token_env": "",
            "version": "1.7.12",
            "image": "docker.io/restatedev/restate:1.7.12",
            "node_port": 5122,
            "partitions": 4,
        },
        "service": {
            "mode": "process",
            "url": "http://127.0.0.1:9080",
            "port_range": [],
            "hold_seconds": 900.0,
            "signing": False,
            "identity_key_env": "",
            "connect_name": "nexus",
            "connect_key_env": "RESTATE_CONNECT_KEY",
        },
        "gateway": {"mode": "mock", "url": "http://127.0.0.1:9081", "latency_ms": 0.0},
        "state": {"dir": ""},
        "cluster": {
            "nodes": 3,
            "replication": 2,
            "ingress_ports": [],
            "admin_ports": [],
            "node_ports": [],
        },
        "snapshots": {
            "store": "moto",
            "url": "",
            "bucket": "nexus-snapshots",
            "prefix": "",
            "interval_records": 5000,
            "interval": "",
            "retained": 2,
        },
    }
    assert isinstance(env.settings.service.hold_seconds, float)
    assert env.ingress == Endpoint("http://127.0.0.1:8080")
    assert env.admin.port == 9070
    assert env.service.bind == "127.0.0.1:9080"
    assert env.gateway.url == "http://127.0.0.1:9081"
    assert env.state_dir == root / ".nexus" / "mini"
    assert env.token is None


def test_hosted_external_file_loads(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEXUS_TEST_TOKEN", SECRET)
    write(root, "cloud", HOSTED)
    env = load("cloud", root=root)
    assert env.runtime == "external"
    assert env.service_mode == "url"
    assert env.service.url == "https://svc.example.com"  # trailing slash dropped
    assert env.gateway_mode == "external"  # no local mock for a service hosted elsewhere
    assert env.ingress.port == 8080
    assert env.ingress.host == "abc.env.eu.restate.cloud"
    assert env.token == SECRET


def test_project_local_file_loads() -> None:
    env = load("local")
    assert env.runtime in environments.RUNTIMES
    assert env.file.name == "local.toml"


def test_overrides_are_typed(root: Path) -> None:
    write(
        root,
        "o",
        MINIMAL
        + """
[gateway]
mode = "external"
url = "https://pay.example.com"
latency_ms = 5

[state]
dir = "/var/tmp/nexus-o"
""",
    )
    env = load("o", root=root)
    assert env.settings.gateway.latency_ms == 5.0
    assert isinstance(env.settings.gateway.latency_ms, float)
    assert env.gateway_mode == "external"
    assert env.gateway.port == 443
    assert env.state_dir == Path("/var/tmp/nexus-o")


def test_relative_state_dir_is_under_root(root: Path) -> None:
    write(root, "r", MINIMAL + '\n[state]\ndir = "data/x"\n')
    assert load("r", root=root).state_dir == root / "data" / "x"


def test_missing_file_names_path_and_known_envs(root: Path) -> None:
    write(root, "alpha", MINIMAL)
    write(root, "beta", MINIMAL)
    with pytest.raises(ConfigError) as info:
        load("gamma", root=root)
    message = str(info.value)
    assert str(root / "environments" / "gamma.toml") in message
    assert "not found" in message
    assert "alpha, beta" in message


@pytest.mark.parametrize("name", ["b@d", "a b", "", "x;rm"])
def test_bad_environment_names(root: Path, name: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(name, root=root)
    assert "bad environment name" in str(info.value)


def test_path_to_toml_works_as_env(tmp_path: Path, root: Path) -> None:
    elsewhere = tmp_path / "custom" / "staging-eu.toml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(MINIMAL)
    name, path = environment_file(str(elsewhere), root)
    assert (name, path) == ("staging-eu", elsewhere)
    env = load(str(elsewhere), root=root)
    assert env.name == "staging-eu"
    assert env.file == elsewhere


def test_environment_file_by_name(root: Path) -> None:
    assert environment_file("local-2", root) == ("local-2", root / "environments" / "local-2.toml")


def test_invalid_toml(root: Path) -> None:
    message = load_error(root, "[restate\nruntime = ")
    assert "not valid TOML" in message


def test_unknown_section(root: Path) -> None:
    message = load_error(root, MINIMAL + "\n[databse]\nurl = 'x'\n")
    assert "[databse]" in message
    assert "unknown section" in message


def test_unknown_key(root: Path) -> None:
    message = load_error(root, MINIMAL.replace('mode = "process"', 'mode = "process"\nport = 1'))
    assert "service.port" in message
    assert "unknown key" in message


def test_section_must_be_a_table(root: Path) -> None:
    message = load_error(root, MINIMAL + "\n[[gateway]]\nurl = 'http://x'\n")
    assert "[gateway]" in message


@pytest.mark.parametrize(
    ("key", "line"),
    [
        ("restate.runtime", 'runtime = "binary"'),
        ("restate.ingress_url", 'ingress_url = "http://127.0.0.1:8080"'),
        ("restate.admin_url", 'admin_url = "http://127.0.0.1:9070"'),
        ("service.mode", 'mode = "process"'),
        ("service.url", 'url = "http://127.0.0.1:9080"'),
    ],
)
def test_missing_required_key(root: Path, key: str, line: str) -> None:
    message = load_error(root, MINIMAL.replace(line, ""))
    assert f"missing required key {key}" in message


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('runtime = "binary"', 'runtime = "podman"', "restate.runtime"),
        ('mode = "process"', 'mode = "lambda"', "service.mode"),
        (
            'ingress_url = "http://127.0.0.1:8080"',
            'ingress_url = "127.0.0.1:8080"',
            "restate.ingress_url",
        ),
        (
            'admin_url = "http://127.0.0.1:9070"',
            'admin_url = "ftp://host:9070"',
            "restate.admin_url",
        ),
        (
            'admin_url = "http://127.0.0.1:9070"',
            'admin_url = "http://h:99999"',
            "restate.admin_url",
        ),
        ('ingress_url = "http://127.0.0.1:8080"', "ingress_url = 8080", "restate.ingress_url"),
        ('url = "http://127.0.0.1:9080"', 'url = "svc:9080"', "service.url"),
        ('token_env = ""', "token_env = false", "restate.token_env"),
    ],
)
def test_bad_values_name_the_key(root: Path, old: str, new: str, key: str) -> None:
    message = load_error(root, MINIMAL.replace(old, new))
    assert key in message


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("[restate]\npartitions = '4'", "restate.partitions"),
        ("[restate]\npartitions = 0", "restate.partitions"),
        ("[restate]\npartitions = 2.5", "restate.partitions"),
        ("[restate]\nnode_port = true", "restate.node_port"),
        ("[gateway]\nlatency_ms = -1", "gateway.latency_ms"),
        ("[gateway]\nlatency_ms = 'slow'", "gateway.latency_ms"),
        ("[gateway]\nmode = 'stripe'", "gateway.mode"),
        ("[service]\nhold_seconds = true", "service.hold_seconds"),
        ("[service]\nsigning = 'yes'", "service.signing"),
        ("[state]\ndir = 3", "state.dir"),
    ],
)
def test_wrong_types_name_the_key(root: Path, extra: str, key: str) -> None:
    section, line = extra.split("\n")
    text = (
        MINIMAL.replace(section, f"{section}\n{line}")
        if section in MINIMAL
        else MINIMAL + "\n" + extra
    )
    message = load_error(root, text)
    assert key in message


def test_connect_mode_does_not_need_an_http_url(root: Path) -> None:
    write(
        root,
        "c",
        MINIMAL.replace('mode = "process"', 'mode = "connect"').replace(
            'url = "http://127.0.0.1:9080"', 'url = "connect://nexus"'
        ),
    )
    assert load("c", root=root).service_mode == "connect"


@pytest.mark.parametrize(
    "url", ["not a url", "127.0.0.1:9081", "http://h:99999", "http://[::1:9081"]
)
def test_bad_gateway_url_is_rejected(root: Path, url: str) -> None:
    message = load_error(root, MINIMAL + f'\n[gateway]\nurl = "{url}"\n')
    assert "gateway.url" in message


def test_service_url_with_bad_port_is_rejected(root: Path) -> None:
    bad = MINIMAL.replace('url = "http://127.0.0.1:9080"', 'url = "http://127.0.0.1:99999"')
    message = load_error(root, bad)
    assert "service.url" in message


# --- secrets -------------------------------------------------------------------------


def with_token(root: Path, name: str = "sec") -> None:
    write(root, name, MINIMAL.replace('token_env = ""', 'token_env = "NEXUS_TEST_TOKEN"'))


def test_secret_from_dotenv(root: Path) -> None:
    with_token(root)
    (root / ".env").write_text(f"NEXUS_TEST_TOKEN={SECRET}\nNEXUS_TEST_A=from-env\n")
    env = load("sec", root=root)
    assert env.token == SECRET
    assert env.secret("NEXUS_TEST_A") == "from-env"


def test_secret_from_named_dotenv(root: Path) -> None:
    with_token(root)
    (root / ".env.sec").write_text(f"NEXUS_TEST_TOKEN={SECRET}\n")
    (root / ".env.other").write_text("NEXUS_TEST_TOKEN=wrong-env\n")
    assert load("sec", root=root).token == SECRET


def test_named_dotenv_overrides_dotenv(root: Path) -> None:
    with_token(root)
    (root / ".env").write_text("NEXUS_TEST_TOKEN=general\nNEXUS_TEST_A=only-general\n")
    (root / ".env.sec").write_text("NEXUS_TEST_TOKEN=specific\n")
    env = load("sec", root=root)
    assert env.token == "specific"
    assert env.secret("NEXUS_TEST_A") == "only-general"


def test_process_environment_wins(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with_token(root)
    (root / ".env").write_text("NEXUS_TEST_TOKEN=general\n")
    (root / ".env.sec").write_text("NEXUS_TEST_TOKEN=specific\n")
    monkeypatch.setenv("NEXUS_TEST_TOKEN", "from-process")
    assert load("sec", root=root).token == "from-process"


def test_missing_token_names_the_variable(root: Path) -> None:
    with_token(root)
    env = load("sec", root=root)  # loading works; asking for the token fails
    with pytest.raises(SecretMissing) as info:
        _ = env.token
    message = str(info.value)
    assert "NEXUS_TEST_TOKEN" in message
    assert "'sec'" in message
    assert str(root / ".env.sec") in message
    assert isinstance(info.value, ConfigError)


def test_empty_token_counts_as_missing(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with_token(root)
    monkeypatch.setenv("NEXUS_TEST_TOKEN", "")
    with pytest.raises(SecretMissing):
        _ = load("sec", root=root).token


def test_require_secret(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(root, "mini", MINIMAL)
    monkeypatch.setenv("NEXUS_TEST_B", "b-value")
    env = load("mini", root=root)
    assert env.require_secret("NEXUS_TEST_B", "test") == "b-value"
    with pytest.raises(SecretMissing, match="signing key: variable NEXUS_TEST_A is not set"):
        env.require_secret("NEXUS_TEST_A", "signing key")


def test_secrets_never_in_repr(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with_token(root)
    (root / ".env").write_text("NEXUS_TEST_A=dotenv-secret-77\n")
    monkeypatch.setenv("NEXUS_TEST_TOKEN", SECRET)
    env = load("sec", root=root)
    assert env.token == SECRET
    text = repr(env) + str(env)
    assert SECRET not in text
    assert "dotenv-secret-77" not in text
    assert "NEXUS_TEST_TOKEN" in text  # the variable's name is fine to show


def test_endpoint_parts() -> None:
    assert Endpoint("http://example.com").port == 80
    assert Endpoint("https://example.com").port == 443
    assert Endpoint("http://[::1]:8080").host == "::1"
    assert Endpoint("http://10.0.0.1:9").bind == "10.0.0.1:9"


# --- typed settings: rules beyond one value ------------------------------------------


def test_every_problem_is_listed_with_file_and_key(root: Path) -> None:
    text = MINIMAL.replace('runtime = "binary"', 'runtime = "podman"\nflavour = 1')
    text = text.replace('mode = "process"', 'mode = "process"\nsigning = 1')
    message = load_error(root, text + "\n[databse]\nx = 1\n")
    path = str(root / "environments" / "bad.toml")
    assert message.splitlines() == [
        f"{path}: restate.runtime must be one of binary, docker, external, cluster, got 'podman'",
        f"{path}: unknown key restate.flavour (known: runtime, ingress_url, admin_url,"
        " token_env, version, image, node_port, partitions)",
        f"{path}: service.signing must be true or false, got 1",
        f"{path}: unknown section [databse] (known: restate, service, gateway, state, cluster,"
        " snapshots)",
    ]


def test_a_missing_section_names_each_required_key(root: Path) -> None:
    restate_only = MINIMAL.split("[service]")[0]
    message = load_error(root, restate_only)
    assert "missing required key service.mode" in message
    assert "missing required key service.url" in message
    assert "restate." not in message


@pytest.mark.parametrize("value", ["1", "0"])
def test_flags_take_only_true_or_false(root: Path, value: str) -> None:
    text = MINIMAL.replace('mode = "process"', f'mode = "process"\nsigning = {value}')
    message = load_error(root, text)
    assert f"service.signing must be true or false, got {value}" in message


@pytest.mark.parametrize(
    ("ports", "problem"),
    [
        ("[9100]", "service.port_range must be [first, last] with first <= last, got [9100]"),
        ("[9200, 9100]", "service.port_range must be [first, last]"),
        ("[9100, 70000]", "service.port_range must be a list of port numbers"),
        ("[9100, true]", "service.port_range must be a list of port numbers"),
    ],
)
def test_bad_port_range(root: Path, ports: str, problem: str) -> None:
    text = MINIMAL.replace('mode = "process"', f'mode = "process"\nport_range = {ports}')
    assert problem in load_error(root, text)


def test_port_range_sets_the_service_ports(root: Path) -> None:
    write(
        root,
        "p",
        MINIMAL.replace('mode = "process"', 'mode = "process"\nport_range = [9090, 9092]'),
    )
    env = load("p", root=root)
    assert env.settings.service.port_range == [9090, 9092]
    assert env.service_ports == [9090, 9091, 9092]


@pytest.mark.parametrize(
    ("cluster", "problem"),
    [
        ("nodes = 2\nreplication = 3", "cluster.replication must not exceed cluster.nodes"),
        ("node_ports = [25122, 25123]", "cluster.node_ports must list 3 ports (one per node)"),
        ("nodes = 0", "cluster.nodes must be a positive integer, got 0"),
        ("admin_ports = 9070", "cluster.admin_ports must be a list of port numbers, got 9070"),
    ],
)
def test_cluster_rules(root: Path, cluster: str, problem: str) -> None:
    assert problem in load_error(root, MINIMAL + f"\n[cluster]\n{cluster}\n")


def test_cluster_ports_typed_and_defaulted(root: Path) -> None:
    text = MINIMAL.replace('"binary"', '"cluster"') + "\n[cluster]\nadmin_ports = [1, 2, 3]\n"
    write(root, "cl", text)
    env = load("cl", root=root)
    assert env.settings.cluster.admin_ports == [1, 2, 3]
    assert env.cluster_ports("admin") == [1, 2, 3]
    assert env.cluster_ports("ingress") == [8080, 8081, 8082]
    assert env.cluster_ports("node") == [5122, 5123, 5124]
    assert env.ingress_urls == tuple(f"http://127.0.0.1:{p}" for p in (8080, 8081, 8082))


def test_url_mode_keeps_an_explicit_gateway_mode(root: Path) -> None:
    hosted = HOSTED + '\n[gateway]\nmode = "mock"\n'
    write(root, "h", hosted)
    assert load("h", root=root).gateway_mode == "mock"


def test_version_placeholder_in_service_url(root: Path) -> None:
    url = 'url = "http://127.0.0.1:9080"'
    write(root, "v", MINIMAL.replace(url, 'url = "https://nexus-{version}.example.com"'))
    assert load("v", root=root).settings.service.url == "https://nexus-{version}.example.com"
    message = load_error(root, MINIMAL.replace(url, 'url = "http://nexus-{version}:port"'))
    assert "service.url has a bad port: 'http://nexus-{version}:port'" in message


def test_settings_are_read_only(root: Path) -> None:
    write(root, "mini", MINIMAL)
    env = load("mini", root=root)
    with pytest.raises(ValidationError):
        env.settings.restate.partitions = 8  # type: ignore[misc]
    assert env.settings.restate.partitions == 4


@pytest.mark.parametrize("name", ["local", "docker", "cluster", "cloud"])
def test_project_environments_load_unchanged(name: str) -> None:
    env = load(name)
    expected = {
        "local": ("binary", 1, "process", "mock"),
        "docker": ("docker", 1, "container", "mock"),
        "cluster": ("cluster", 4, "process", "mock"),
        "cloud": ("external", 4, "url", "external"),
    }[name]
    restate, service = env.settings.restate, env.settings.service
    assert (restate.runtime, restate.partitions, service.mode, env.gateway_mode) == expected
    assert service.hold_seconds == 900.0
