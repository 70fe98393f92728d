"""The server's own version changes: read what the data allows before anything stops.

restate-server writes its compatibility window into `<base-dir>/<node-name>/.cluster-marker`
and refuses, at start, data outside it. Deploy used to find that out by stopping the
running server and watching the new binary exit. The upgrade step reads every node's
marker first and refuses a target the data rules out, so the running server keeps
serving; a target the data allows is shown as a plan (from, to, what restarts in which
order) by `deploy --check --diff`, and carried out by the server step after it."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ops.base.environments import Environment
from ops.base.errors import NexusError
from ops.base.steps import Result, StepContext, StepFn

MARKER = ".cluster-marker"
Version = tuple[int, int, int]


class UpgradeRefused(NexusError):
    """The data on disk rules out the target version (nothing was stopped)."""


def parse_version(text: str) -> Version:
    """`1.7.12` (a suffix such as `-dev` is ignored) as a comparable triple."""
    match = re.match(r"^\s*v?(\d+)\.(\d+)\.(\d+)", text)
    if match is None:
        raise NexusError(f"not a restate-server version: {text!r} (expected X.Y.Z)")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def show(version: Version) -> str:
    return ".".join(str(part) for part in version)


@dataclass(frozen=True)
class Marker:
    """One node's `.cluster-marker`: which versions wrote its data, which may open it."""

    node: str
    current: Version  # the version that last ran on this data
    max: Version  # the newest version that ever ran on it
    min_forward: Version  # the oldest version that may open it

    @classmethod
    def from_record(cls, node: str, data: dict[str, Any]) -> Marker:
        """From the marker's own JSON, or from a `record()` (KeyError, ValueError if bad)."""
        current = parse_version(str(data["current_version"]))
        return cls(
            node=node,
            current=current,
            max=parse_version(str(data.get("max_version", show(current)))),
            min_forward=parse_version(
                str(data.get("min_forward_compatible_version", show(current)))
            ),
        )

    @classmethod
    def read(cls, path: Path) -> Marker:
        try:
            return cls.from_record(path.parent.name, json.loads(path.read_text()))
        except (OSError, ValueError, KeyError) as exc:
            raise NexusError(f"unreadable data marker {path}: {exc}") from exc

    def record(self) -> dict[str, str]:
        """The marker as plain data, with its node (for status and backup manifests)."""
        return {
            "node": self.node,
            "current_version": show(self.current),
            "max_version": show(self.max),
            "min_forward_compatible_version": show(self.min_forward),
        }


def markers(state_dir: Path) -> list[Marker]:
    """Every node's marker under the environment's data directory, where each runtime keeps
    `<base-dir>/<node-name>/` (none: no data yet). Only `data/` is searched: the state
    directory also holds every version's virtualenv."""
    data = state_dir / "data"
    if not data.is_dir():
        return []
    return [Marker.read(path) for path in sorted(data.rglob(MARKER))]


@dataclass(frozen=True)
class Verdict:
    """What a target version means for one node's data."""

    kind: str  # "same", "upgrade", "downgrade" or "refused"
    reason: str


def judge(target: Version, marker: Marker, *, allow_downgrade: bool) -> Verdict:
    """Restate's rules: one minor at a time, never below the data's window, and a
    rollback only when asked for."""
    node = marker.node
    if target < marker.min_forward:
        return Verdict(
            "refused",
            f"node {node}: restate-server {show(target)} cannot open its data, which"
            f" requires >= {show(marker.min_forward)} (last written by"
            f" {show(marker.current)}); pin {show(marker.current)} or a version"
            f" >= {show(marker.min_forward)}",
        )
    major, minor = marker.max[0], marker.max[1]
    next_minor = (major, minor + 1)
    if target[:2] > next_minor and not (target[0] == major + 1 and target[1] == 0):
        return Verdict(
            "refused",
            f"node {node}: {show(target)} skips a minor version past the newest that ran"
            f" on its data ({show(marker.max)}); upgrade one minor at a time: first"
            f" {major}.{minor + 1}.x, then on from there",
        )
    if target == marker.current:
        return Verdict("same", f"node {node}: data written by {show(marker.current)}")
    if target < marker.current:
        if not allow_downgrade:
            return Verdict(
                "refused",
                f"node {node}: {show(target)} is a rollback from {show(marker.current)};"
                f" the data allows it (it opens with >= {show(marker.min_forward)}):"
                " pass --allow-downgrade to roll back",
            )
        return Verdict(
            "downgrade",
            f"node {node}: roll back {show(marker.current)} → {show(target)}, keeping its"
            f" data (it opens with >= {show(marker.min_forward)}; the older server"
            " rewrites the marker)",
        )
    return Verdict("upgrade", f"node {node}: {show(marker.current)} → {show(target)}")


def plan_lines(
    env: Environment, found: list[Marker], verdicts: list[Verdict], facts: Sequence[str] = ()
) -> list[str]:
    """The plan `deploy --check --diff` shows: from, to, the data's versions (and `facts`
    about them, such as the cluster's features), the order."""
    target = env.settings.restate.version
    lines = [f"restate-server upgrade plan: → {target} ({env.runtime} runtime)"]
    for marker, verdict in zip(found, verdicts, strict=True):
        lines.append(
            f"  data of {marker.node}: current {show(marker.current)}, newest"
            f" {show(marker.max)}, opens with >= {show(marker.min_forward)}: {verdict.kind}"
        )
    lines += facts
    if env.runtime == "cluster":
        order = ", ".join(m.node for m in found)
        lines.append(f"  restarts one node at a time, in order: {order}")
    else:
        lines.append("  restarts: restate-server stops gracefully, starts on the same data")
    lines.append("  then: the service re-registers, a smoke call checks it")
    if env.runtime in ("binary", "docker"):
        old = "binary" if env.runtime == "binary" else "container's settings (image)"
        lines.append(
            f"  backup: the data is archived into {env.state_dir.name}-backups/ beside the"
            " state folder once the server has stopped, before the new version starts; if"
            f" it does not come up, that data goes back under the old {old}"
        )
    elif env.runtime == "cluster":
        lines.append(
            f"  backup: each node's data is archived into {env.state_dir.name}-backups/ once"
            " that node has stopped, before it starts on the new version; a node that does"
            " not come up starts again on its old version and data as they are (its archive"
            " is named); partition snapshots are not taken (`invoke snapshot` first)"
        )
    else:
        lines.append(
            f"  backup: none is taken by deploy on the {env.runtime} runtime; take one first"
        )
    return lines


#: Asked before a rollback is planned, with the target and the markers: lines for the
#: plan, and a refusal (or None). See `ops.server.cluster_features.rollback_check`.
RollbackCheck = Callable[[StepContext, Version, list[Marker]], tuple[list[str], str | None]]


def upgrade_step(
    env: Environment, *, allow_downgrade: bool, rollback_check: RollbackCheck | None = None
) -> StepFn:
    """A step before the server's: ok when the data was written by the target version
    (or there is none), changed with a plan when it allows the target, failed (and
    nothing stopped) when it rules it out, or when `rollback_check` refuses a rollback."""

    def step(ctx: StepContext) -> Result:
        target = parse_version(env.settings.restate.version)
        found = markers(env.state_dir)
        if not found:
            return Result.ok(f"no server data yet; {show(target)} starts fresh")
        verdicts = [judge(target, m, allow_downgrade=allow_downgrade) for m in found]
        refused = [v.reason for v in verdicts if v.kind == "refused"]
        if refused:
            raise UpgradeRefused(
                f"restate-server {show(target)} refused, nothing stopped: " + "; ".join(refused)
            )
        if all(v.kind == "same" for v in verdicts):
            return Result.ok(f"data written by {show(target)} on {len(found)} node(s)")
        facts: list[str] = []
        if rollback_check is not None and any(v.kind == "downgrade" for v in verdicts):
            facts, refusal = rollback_check(ctx, target, found)
            if refusal is not None:
                raise UpgradeRefused(
                    f"restate-server {show(target)} refused, nothing stopped: {refusal}"
                )
        lines = plan_lines(env, found, verdicts, facts)
        kinds = sorted({v.kind for v in verdicts if v.kind != "same"})
        verb = "would " if ctx.check else ""
        return Result.changed(f"{verb}{'/'.join(kinds)} to {show(target)}", lines)

    return step


class UpgradeFailed(NexusError):
    """The new version did not come up on the data; what deploy did about it is said."""


def _leaf_keys(table: dict[str, Any], prefix: str = "") -> set[str]:
    found = set()
    for key, value in table.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            found |= _leaf_keys(value, path)
        else:
            found.add(path)
    return found


def dumped_keys(argv: list[str], what: str) -> set[str]:
    """The config keys restate-server (`what`: a binary or an image) runs with, from
    `argv` ending in `--dump-config`; refused when that fails or prints no TOML."""
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UpgradeRefused(f"{what} --dump-config did not run ({exc}); nothing stopped") from None
    if proc.returncode != 0:
        raise UpgradeRefused(
            f"{what} --dump-config failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]};"
            " nothing stopped"
        )
    try:
        return _leaf_keys(tomllib.loads(proc.stdout))
    except tomllib.TOMLDecodeError as exc:
        raise UpgradeRefused(f"{what} --dump-config printed no TOML ({exc})") from None


def unknown_config_keys(binary: Path, config: str, scratch: Path) -> list[str]:
    """The keys of `config` that `binary` does not know. restate-server ignores unknown
    keys silently, so this asks the binary itself: `--dump-config` with the config given
    prints the config it would run with, and a key it dropped is one it does not know."""
    scratch.mkdir(parents=True, exist_ok=True)
    probe = scratch / "restate.config-check.toml"
    probe.write_text(config)
    try:
        argv = [str(binary), "--config-file", str(probe), "--dump-config"]
        effective = dumped_keys(argv, str(binary))
    finally:
        probe.unlink(missing_ok=True)
    return sorted(_leaf_keys(tomllib.loads(config)) - effective)


def env_key(variable: str) -> str:
    """The config key a `RESTATE_` variable sets: `__` nests, `_` is `-`
    (`RESTATE_ADMIN__BIND_ADDRESS` is `admin.bind-address`)."""
    name = variable.removeprefix("RESTATE_").lower()
    return ".".join(part.replace("_", "-") for part in name.split("__"))


def unknown_env_keys(image: str, variables: dict[str, str]) -> list[str]:
    """The `RESTATE_` variables (as keys) that `image`'s restate-server does not know: the
    same question as `unknown_config_keys`, asked of a throwaway container with no network."""
    argv = ["docker", "run", "--rm", "--network", "none"]
    for name, value in variables.items():
        argv += ["--env", f"{name}={value}"]
    effective = dumped_keys([*argv, image, "--dump-config"], f"image {image}")
    return sorted(k for k in map(env_key, variables) if k not in effective)
