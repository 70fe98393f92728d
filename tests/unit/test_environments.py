"""Environment inventory (ops/environments.py): TOML files, defaults, errors, secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops import environments
from ops.environments import SCHEMA, Endpoint, environment_file, load
from ops.errors import ConfigError, SecretMissing

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
    for section, defaults in SCHEMA.items():
        for key, default in defaults.items():
            if section not in ("restate", "service") or key not in MINIMAL:
                assert env.get(section, key) == default, f"{section}.{key}"
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
    assert env.get("gateway", "latency_ms") == 5.0
    assert isinstance(env.get("gateway", "latency_ms"), float)
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
