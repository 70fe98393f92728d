"""A rollback to 1.6 of data whose cluster has controlled-idempotent-sharding is refused
unless asked for (the features as restatectl prints them; no server here, see
tests/integration/test_server_upgrade.py for the real one)."""

from __future__ import annotations

import json

import pytest

from ops.base.steps import Status, StepContext
from ops.server import cluster_features
from ops.server.cluster_features import (
    IDEMPOTENT_SHARDING,
    Features,
    crosses_features,
    parse_nodes_config,
    resharding_refusal,
    rollback_check,
)
from ops.server.server_upgrade import Marker, UpgradeRefused, parse_version, upgrade_step
from tests.conftest import EnvFactory

# The shape `restatectl metadata get -k nodes_config` printed for a fresh 1.7.12 node.
NODES_CONFIG = """{
  "version": 4,
  "cluster_name": "nexus-feat",
  "features": ["controlled-idempotent-sharding"],
  "nodes": [[1, {"Node": {"binary_version": "1.7.12", "name": "nexus-feat"}}]]
}"""


def marker(current: str) -> Marker:
    version = parse_version(current)
    return Marker(node="n1", current=version, max=version, min_forward=(1, 6, 0))


def test_the_nodes_configuration_names_the_features() -> None:
    assert parse_nodes_config(NODES_CONFIG).names == (IDEMPOTENT_SHARDING,)
    none = json.loads(NODES_CONFIG) | {"features": []}
    assert parse_nodes_config(json.dumps(none)).names == ()
    assert parse_nodes_config("error: no metadata").names is None


def test_only_a_rollback_from_1_7_to_1_6_crosses_the_features() -> None:
    assert crosses_features(parse_version("1.6.2"), [marker("1.7.12")])
    assert not crosses_features(parse_version("1.7.10"), [marker("1.7.12")])  # a patch
    assert not crosses_features(parse_version("1.6.1"), [marker("1.6.2")])


def test_the_refusal_says_what_is_lost_and_how_to_go_on() -> None:
    refusal = resharding_refusal((1, 6, 2), Features((IDEMPOTENT_SHARDING,)))
    assert refusal is not None
    assert IDEMPOTENT_SHARDING in refusal and "--allow-resharding" in refusal
    assert "archive taken on 1.6.x" in refusal
    assert resharding_refusal((1, 6, 2), Features(())) is None  # provisioned by 1.6
    unread = resharding_refusal((1, 6, 2), Features(None, "connection refused"))
    assert unread is not None and "connection refused" in unread


@pytest.mark.parametrize(
    ("features", "check", "allow", "refused"),
    [
        (Features((IDEMPOTENT_SHARDING,)), False, False, True),
        (Features((IDEMPOTENT_SHARDING,)), True, False, True),  # the plan says no too
        (Features((IDEMPOTENT_SHARDING,)), False, True, False),
        (Features(()), False, False, False),
        (Features(None, "not installed"), True, False, False),  # the plan says not read
        (Features(None, "connection refused"), False, False, True),
        (Features(None, "connection refused"), False, True, False),
    ],
)
def test_the_rollback_check(
    make_env: EnvFactory,
    monkeypatch: pytest.MonkeyPatch,
    features: Features,
    check: bool,
    allow: bool,
    refused: bool,
) -> None:
    asked: list[str] = []

    def read(env: object, running: str, ctx: StepContext) -> Features:
        asked.append(running)
        return features

    monkeypatch.setattr(cluster_features, "read_features", read)
    rollback = rollback_check(make_env(), allow_resharding=allow)
    lines, refusal = rollback(StepContext(check=check), (1, 6, 2), [marker("1.7.12")])
    assert asked == ["1.7.12"] and (refusal is not None) == refused
    assert lines[0] == features.line()
    assert ("--allow-resharding" in " ".join(lines)) == (allow and features.names != ())
    assert rollback(StepContext(), (1, 7, 10), [marker("1.7.12")]) == ([], None)


def test_the_upgrade_step_fails_on_a_refusal_and_plans_otherwise(make_env: EnvFactory) -> None:
    env = make_env(restate='version = "1.6.2"')
    data = env.state_dir / "data" / "n1"
    data.mkdir(parents=True)
    record = marker("1.7.12").record()
    (data / ".cluster-marker").write_text(json.dumps(record))

    def refuse(ctx: StepContext, target: object, found: object) -> tuple[list[str], str]:
        return ["  cluster features: x"], "the reason"

    step = upgrade_step(env, allow_downgrade=True, rollback_check=refuse)
    with pytest.raises(UpgradeRefused, match=r"1\.6\.2 refused, nothing stopped: the reason"):
        step(StepContext())

    def allow(ctx: StepContext, target: object, found: object) -> tuple[list[str], None]:
        return ["  cluster features: x"], None

    result = upgrade_step(env, allow_downgrade=True, rollback_check=allow)(StepContext())
    assert result.status == Status.CHANGED and "  cluster features: x" in result.diff
