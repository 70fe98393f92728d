"""Cluster features: what the server's data was provisioned with, read from its nodes.

restate-server 1.7 provisions a new cluster (a single node is one too) with the feature
`controlled-idempotent-sharding`: an idempotent call to a service without a key, such as
`Checkout/process`, goes to a partition chosen from the service's name and its
Idempotency-Key. 1.6 knows no features. It places the same call by the key alone, and it
drops the feature from the nodes configuration when it starts. So after a rollback to 1.6
of such data, a request re-sent with an Idempotency-Key from before is not found, and it
runs again (measured: 0 of 8 keys honoured, on 1 partition and on 4). The upgrade step
asks the running server before it plans that rollback, and refuses it unless told."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ops.base.environments import Environment
from ops.base.errors import NexusError, RuntimeUnavailable
from ops.base.steps import StepContext
from ops.server.cluster import RESTATECTL, nodes, restatectl_binary, restatectl_version
from ops.server.restatectl import run_restatectl
from ops.server.runtimes import npm_install
from ops.server.server_upgrade import Marker, RollbackCheck, Version, show

IDEMPOTENT_SHARDING = "controlled-idempotent-sharding"
#: The first minor with cluster features: data it provisioned may have them.
FEATURES_SINCE: Version = (1, 7, 0)


@dataclass(frozen=True)
class Features:
    """The cluster's features as its nodes configuration lists them; `names` is None when
    they could not be read, and `unread` says why."""

    names: tuple[str, ...] | None
    unread: str = ""

    def line(self) -> str:
        """The plan's line for them."""
        if self.names is None:
            return f"  cluster features: not read ({self.unread})"
        listed = ", ".join(self.names) or "none"
        return f"  cluster features (read from the running server): {listed}"


def crosses_features(target: Version, found: list[Marker]) -> bool:
    """A rollback from data written by 1.7 or later to a version without features."""
    return target < FEATURES_SINCE and any(m.current >= FEATURES_SINCE for m in found)


def node_addresses(env: Environment) -> list[str]:
    """The nodes' control addresses (`restatectl -s`), as the runtime binds them."""
    if env.runtime == "cluster":
        return [node.address for node in nodes(env)]
    return [f"http://{env.ingress.host}:{env.settings.restate.node_port}/"]


def read_features(env: Environment, running: str, ctx: StepContext) -> Features:
    """`restatectl metadata get -k nodes_config` against the running server (version
    `running`), with the restatectl that inspects it, installed with npm when missing
    (not in check mode)."""
    npm_dir = env.npm_dir.with_name(f"restate-server-{running}")
    ctl = restatectl_binary(npm_dir)
    version = restatectl_version(running)
    if not ctl.is_file():
        if ctx.check:
            return Features(None, f"{RESTATECTL} {version} is not installed; deploy installs"
                                  " it and reads them before it stops anything")  # fmt: skip
        try:
            npm_install(npm_dir, f"{RESTATECTL}@{version}", ctl)
        except RuntimeUnavailable as exc:
            return Features(None, str(exc).splitlines()[0])
    try:
        out = run_restatectl(ctl, node_addresses(env), "metadata", "get", "-k", "nodes_config")
    except NexusError as exc:
        return Features(None, str(exc)[:300])
    return parse_nodes_config(out)


def parse_nodes_config(text: str) -> Features:
    """The features of a nodes configuration as restatectl prints it (JSON)."""
    try:
        config = json.loads(text[text.find("{") :])
        names = config["features"]
    except (ValueError, KeyError, TypeError):
        return Features(None, "restatectl printed no nodes configuration with features")
    if not isinstance(names, list):
        return Features(None, f"unexpected features in the nodes configuration: {names!r}")
    return Features(tuple(str(n) for n in names))


def resharding_refusal(target: Version, features: Features) -> str | None:
    """Why a rollback to `target` would forget the Idempotency-Keys sent before it (or
    cannot tell); None when the data's cluster has no feature that 1.6 lacks."""
    if features.names is None:
        return (
            f"a rollback to {show(target)} drops the cluster features of data written by"
            f" 1.7, and they could not be read ({features.unread}); start the server on its"
            " own version so that deploy can ask it, or pass --allow-resharding"
        )
    if IDEMPOTENT_SHARDING not in features.names:
        return None
    return (
        f"the data's cluster was provisioned with {IDEMPOTENT_SHARDING}: 1.7 places an"
        " idempotent call to a service without a key (Checkout/process) by the service's"
        f" name and its Idempotency-Key, {show(target)} by the key alone (and drops the"
        " feature), so a request re-sent with a key from before the rollback would run"
        " again (within the idempotency retention, 24 h by default); restore an archive"
        f" taken on {target[0]}.{target[1]}.x (`invoke restore`), or"
        " pass --allow-resharding to roll back anyway"
    )


def rollback_check(env: Environment, *, allow_resharding: bool) -> RollbackCheck:
    """The upgrade step's question before a rollback: does it cross the features of the
    data's cluster? Refused unless `allow_resharding`; not refused in check mode when the
    features could not be read (the plan says so)."""

    def check(
        ctx: StepContext, target: Version, found: list[Marker]
    ) -> tuple[list[str], str | None]:
        if not crosses_features(target, found):
            return [], None
        running = show(max(m.current for m in found))
        features = read_features(env, running, ctx)
        refusal = resharding_refusal(target, features)
        lines = [features.line()]
        if refusal is None or (ctx.check and features.names is None):
            return lines, None
        if allow_resharding:
            lines.append("  --allow-resharding: Idempotency-Keys sent before the rollback are"
                         " not honoured after it")  # fmt: skip
            return lines, None
        return lines, refusal

    return check
