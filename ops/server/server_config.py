"""restate-server's TOML config: one builder for a single server and for a cluster node."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ops.base.environments import Environment
from ops.base.signing import private_key_file, signing_dir


@dataclass(frozen=True)
class Membership:
    """A node's place in a cluster: its forced id, whether it provisions, its peers."""

    node_id: int
    provisions: bool
    metadata_addresses: tuple[str, ...]
    snapshots: tuple[str, ...] = ()  # the `[worker.snapshots]` lines, if any


@dataclass(frozen=True)
class ServerNode:
    """What sets one restate-server apart: its name, data folder and addresses."""

    name: str
    data_dir: Path
    node_bind: str  # host:port of the node-to-node address
    ingress_bind: str
    admin_bind: str
    membership: Membership | None = None  # None: a single server, no cluster settings


def single_node(env: Environment) -> ServerNode:
    """The one server of a `binary` environment."""
    return ServerNode(
        name=f"nexus-{env.name}",
        data_dir=env.state_dir / "data",
        node_bind=f"{env.ingress.host}:{env.settings.restate.node_port}",
        ingress_bind=env.ingress.bind,
        admin_bind=env.admin.bind,
    )


def server_config(env: Environment) -> str:
    """The config of the single server: everything bound to the environment's addresses."""
    return restate_config(env, single_node(env))


def restate_config(env: Environment, node: ServerNode) -> str:
    """restate-server's config for `node`; cluster settings only when it has a membership."""
    member = node.membership
    header = f"# Written by the Nexus toolkit from {env.file}"
    lines = [
        header if member is None else f"{header} (cluster node {member.node_id})",
        f'node-name = "{node.name}"',
        f'cluster-name = "nexus-{env.name}"',
    ]
    if member is not None:
        lines += [
            f"force-node-id = {member.node_id}",
            f"auto-provision = {'true' if member.provisions else 'false'}",
            f"default-replication = {env.settings.cluster.replication}",
        ]
    lines += [
        f'base-dir = "{node.data_dir}"',
        f"default-num-partitions = {env.settings.restate.partitions}",
        f'bind-address = "{node.node_bind}"',
        f'advertised-address = "http://{node.node_bind}/"',
        'listen-mode = "tcp"',
        "disable-telemetry = true",
        'log-format = "compact"',
        "log-disable-ansi-codes = true",
    ]
    if member is not None:
        addresses = ", ".join(f'"{a}"' for a in member.metadata_addresses)
        lines += [
            "",
            "[metadata-client]",
            f"addresses = [{addresses}]",
            "",
            "[bifrost]",
            'default-provider = "replicated"',
            *member.snapshots,
        ]
    lines += [
        "",
        "[ingress]",
        f'bind-address = "{node.ingress_bind}"',
        "",
        "[admin]",
        f'bind-address = "{node.admin_bind}"',
    ]
    if env.settings.service.signing:
        key = private_key_file(signing_dir(env.state_dir))
        lines += ["", "[worker.invoker]", f'request-identity-private-key-pem-file = "{key}"']
    return "\n".join(lines) + "\n"
