"""The S3-compatible object store that keeps a cluster's partition snapshots.

Since restate-server 1.6 snapshots go only to object stores (`s3://`, `gs://`, `az://`).
On this machine the toolkit runs moto's S3 server (`moto_server`, PyPI `moto[server]`) on
loopback, like the mock gateway: a managed process with a PID file, a readiness probe and
a log, plus the bucket. Its access keys are dummy loopback values (moto accepts any), not
secrets. moto keeps objects in memory: a restarted store is empty until the next snapshot.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ops.base.environments import Endpoint, Environment
from ops.base.errors import ApiError, NexusError, RuntimeUnavailable
from ops.base.processes import ProcessManager, ProcessSpec, http_ready
from ops.base.steps import Result, Status, StepContext
from ops.server.runtimes import ensure_process

STORE = "snapshot-store"
REGION = "local"
# moto accepts any keys; these only say where they come from. Never real credentials.
ACCESS_KEY_ID = "nexus-loopback"
SECRET_ACCESS_KEY = "nexus-loopback-dummy"


@dataclass(frozen=True)
class SnapshotInfo:
    """One partition's latest snapshot, from `<prefix>/<partition>/latest.json`."""

    partition: int
    snapshot_id: str
    min_applied_lsn: int
    created_at: str
    size_bytes: int  # of the snapshot's files
    node: str  # the node that took it


def moto_server() -> Path:
    """The `moto_server` executable of this interpreter's environment (or PATH)."""
    beside = Path(sys.executable).with_name("moto_server")
    if beside.is_file():
        return beside
    found = shutil.which("moto_server")
    if found is None:
        raise RuntimeUnavailable(
            "moto_server not found: install the toolkit's dependencies (pip install -e .)"
        )
    return Path(found)


def snapshot_prefix(env: Environment) -> str:
    return (env.settings.snapshots.prefix or env.name).strip("/")


def destination(env: Environment) -> str:
    """What restate-server is told: `s3://bucket/prefix`."""
    return f"s3://{env.settings.snapshots.bucket}/{snapshot_prefix(env)}"


def snapshot_config(env: Environment) -> list[str]:
    """The `[worker.snapshots]` table of every cluster node's config (none when off)."""
    s = env.settings.snapshots
    if s.store == "off":
        return []
    lines = [
        "",
        "[worker.snapshots]",
        f'destination = "{destination(env)}"',
        f"snapshot-interval-num-records = {s.interval_records}",
    ]
    if s.interval:
        lines.append(f'snapshot-interval = "{s.interval}"')
    return [
        *lines,
        f"num-retained = {s.retained}",
        f'aws-region = "{REGION}"',
        f'aws-endpoint-url = "{env.snapshot_store.url}"',
        "aws-allow-http = true",
        f'aws-access-key-id = "{ACCESS_KEY_ID}"',
        f'aws-secret-access-key = "{SECRET_ACCESS_KEY}"',
    ]


class ObjectStore:
    """The environment's snapshot store: its process, bucket and objects."""

    def __init__(self, env: Environment, procs: ProcessManager) -> None:
        self.env = env
        self.procs = procs
        self.settings = env.settings.snapshots

    @property
    def enabled(self) -> bool:
        return self.settings.store != "off"

    @property
    def endpoint(self) -> Endpoint:
        return self.env.snapshot_store

    @property
    def prefix(self) -> str:
        return snapshot_prefix(self.env)

    @property
    def destination(self) -> str:
        return destination(self.env)

    def spec(self) -> ProcessSpec:
        return ProcessSpec(
            name=STORE,
            argv=[str(moto_server()), "-H", self.endpoint.host, "-p", str(self.endpoint.port)],
            cwd=self.env.state_dir,
            ports=[(self.endpoint.host, self.endpoint.port)],
            ready=http_ready(f"{self.endpoint.url}/moto-api/"),
            stop_timeout=3.0,
        )

    # --- the deploy step --------------------------------------------------------------

    def step(self, ctx: StepContext) -> Result:
        """The store running and its bucket made."""
        if not self.enabled:
            return Result.skipped('partition snapshots off ([snapshots] store = "off")')
        if not ctx.check:
            self.env.state_dir.mkdir(parents=True, exist_ok=True)
        started = ensure_process(self.procs, self.spec(), ctx)
        where = f"{self.destination} at {self.endpoint.url}"
        if ctx.check:
            if started.status != Status.OK:
                return started
            if not self.bucket_exists():
                return Result.changed(f"would make bucket {self.settings.bucket}")
            return Result.ok(where)
        if self.bucket_exists():
            return Result.ok(where) if started.status == Status.OK else started
        self._call("create_bucket", Bucket=self.settings.bucket)
        if not self.bucket_exists():
            raise ApiError(f"bucket {self.settings.bucket} was not made at {self.endpoint.url}")
        return Result.changed(
            f"{started.message}; made bucket {self.settings.bucket}", started.diff
        )

    # --- reading ----------------------------------------------------------------------

    def _client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint.url,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name="us-east-1",
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        )

    def _call(self, operation: str, **params: Any) -> Any:
        """One S3 call; a failure is an `ApiError` naming the store and the operation."""
        try:
            return getattr(self._client(), operation)(**params)
        except (BotoCoreError, ClientError) as exc:
            raise ApiError(
                f"snapshot store {self.endpoint.url}: {operation} failed: {exc}"
            ) from None

    def bucket_exists(self) -> bool:
        if not self.procs.info(STORE).alive:
            return False
        try:
            self._call("head_bucket", Bucket=self.settings.bucket)
        except ApiError:
            return False
        return True

    def list_objects(self, prefix: str) -> list[tuple[str, int]]:
        """(key, size) of every object under `prefix` (ListObjectsV2, paged, bounded)."""
        found: list[tuple[str, int]] = []
        params: dict[str, Any] = {"Bucket": self.settings.bucket, "Prefix": prefix}
        for _ in range(1000):
            page = self._call("list_objects_v2", **params)
            found += [(o["Key"], int(o.get("Size", 0))) for o in page.get("Contents", [])]
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                break
            params["ContinuationToken"] = token
        return found

    def read_json(self, key: str) -> dict[str, Any] | None:
        try:
            body = self._call("get_object", Bucket=self.settings.bucket, Key=key)["Body"].read()
            data = json.loads(body)
        except (ApiError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def latest_snapshots(self) -> dict[int, SnapshotInfo]:
        """Partition → its latest snapshot, for every partition that has one."""
        objects = self.list_objects(f"{self.prefix}/")
        latest: dict[int, SnapshotInfo] = {}
        for key, _ in objects:
            parts = key[len(self.prefix) + 1 :].split("/")
            if len(parts) != 2 or parts[1] != "latest.json" or not parts[0].isdigit():
                continue
            doc = self.read_json(key) or {}
            partition = int(parts[0])
            folder = f"{self.prefix}/{partition}/{doc.get('path', '?')}/"
            latest[partition] = SnapshotInfo(
                partition=partition,
                snapshot_id=str(doc.get("snapshot_id", "?")),
                min_applied_lsn=int(doc.get("min_applied_lsn", 0) or 0),
                created_at=str(doc.get("created_at", "")),
                size_bytes=sum(size for k, size in objects if k.startswith(folder)),
                node=str(doc.get("node_name", "")),
            )
        return latest


def status_lines(store: ObjectStore, partitions: int) -> list[str]:
    """The snapshot destination and, per partition, its latest snapshot."""
    if not store.enabled:
        return ["  snapshots: off"]
    lines = [f"  snapshots: {store.destination} at {store.endpoint.url}"]
    if not store.procs.info(STORE).alive:
        return [*lines, "    store not running"]
    try:
        latest = store.latest_snapshots()
    except NexusError as exc:
        return [*lines, f"    unreadable: {exc}"]
    for p in range(partitions):
        snap = latest.get(p)
        if snap is None:
            lines.append(f"    p{p}  no snapshot yet")
        else:
            lines.append(
                f"    p{p}  {snap.snapshot_id}  lsn {snap.min_applied_lsn}  {snap.created_at}"
                f"  by {snap.node}  {snap.size_bytes / 1024:.1f} KiB"
            )
    return lines
