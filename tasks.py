"""Nexus tasks: `invoke --list` shows them all; those that act on a stack take `--env NAME`."""

from __future__ import annotations

import json as jsonlib
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from invoke import Context, Exit, task

from ops import audit as audit_mod
from ops import chaos as chaos_mod
from ops import environments, scenarios, steps
from ops import invocations as inv_mod
from ops import load as loadrun
from ops.admin import AdminClient
from ops.build import Build
from ops.environments import PROJECT_ROOT
from ops.errors import NexusError
from ops.stack import deploy as deploy_play
from ops.stack import down as down_play
from ops.stack import status_lines
from ops.steps import Context as StepContext
from ops.steps import Play

ENV_HELP = "environment name under environments/ (or a path to a .toml file); default: local"
JSON_HELP = "print one JSON object per step and a recap object (no text)"
READ_ONLY = "status, audit, invocations"
WITH_CHECK = "deploy, down, build, cancel, purge"


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
    names = [env.get("restate", "token_env"), env.get("service", "connect_key_env")]
    return [env.secret(str(n)) for n in names if n]


@task(
    help={
        "env": ENV_HELP,
        "check": "show what would change, change nothing (also under invoke --dry)",
        "diff": "show before/after of each change",
        "json": JSON_HELP,
    }
)
def deploy(
    c: Context, env: str = "local", check: bool = False, diff: bool = False, json: bool = False
) -> None:
    """Converge the environment: server, gateway, service, registration, smoke call."""
    environment = _env(env)
    with _errors(), steps.output(json=json, redact=_secret_values(environment)):
        play = deploy_play(environment, check=check or _dry(c), diff=diff)
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
    with _errors(), steps.output(json=json, redact=_secret_values(environment)):
        play = down_play(environment, purge=purge, check=check or _dry(c))
    if play.failed:
        raise Exit(code=1)


def _admin(environment: environments.Environment) -> AdminClient:
    return AdminClient(environment.admin.url, environment.token)


@task(
    help={
        "env": ENV_HELP,
        "status": "only this status: " + ", ".join(inv_mod.OPEN_STATUSES),
        "service": "only invocations of this service (Checkout, Ticket, ...)",
        "older_than": "only those older than this (30s, 15m, 2h, 1d)",
        "json": "print one JSON object instead of the table",
        "max_retries": f"retries beyond which one counts as stuck (default"
        f" {inv_mod.DEFAULT_MAX_RETRIES})",
    }
)
def invocations(
    c: Context,
    env: str = "local",
    status: str = "",
    service: str = "",
    older_than: str = "",
    json: bool = False,
    max_retries: int = inv_mod.DEFAULT_MAX_RETRIES,
) -> None:
    """What runs, waits, backs off or is paused, stuck work first: target, seat, age, retries,
    last failure, pinned deployment."""
    with _errors():
        if status and status not in inv_mod.OPEN_STATUSES:
            raise NexusError(
                f"--status takes one of {', '.join(inv_mod.OPEN_STATUSES)}, not {status!r}"
            )
        older = inv_mod.parse_duration("--older-than", older_than) if older_than else 0.0
        environment = _env(env)
        admin = _admin(environment)
        try:
            found = inv_mod.open_invocations(admin, service=service or None, status=status or None)
        finally:
            admin.close()
    selection = inv_mod.Selection(older_than_s=older, max_retries=max_retries)
    chosen = selection.apply(found)
    if json:
        rows = [i.to_dict(selection.now, max_retries) for i in chosen]
        stuck = sum(r["stuck"] is not None for r in rows)
        print(jsonlib.dumps({"invocations": rows, "open": len(rows), "stuck": stuck}))
    else:
        print("\n".join(inv_mod.table_lines(chosen, selection.now, max_retries)))


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
    max_retries: int = inv_mod.DEFAULT_MAX_RETRIES,
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
        older = inv_mod.parse_duration("--older-than", older_than) if older_than else 0.0
        environment = _env(env)
        admin = _admin(environment)
        try:
            if named:
                chosen = inv_mod.by_ids(admin, named)
            else:
                selection = inv_mod.Selection(older_than_s=older, max_retries=max_retries)
                chosen = [
                    i
                    for i in selection.apply(inv_mod.open_invocations(admin))
                    if not stuck or i.stuck_reason(max_retries) is not None
                ]
            if kill:
                inv_mod.check_kill(chosen, force=force)
            verb = "kill" if kill else "cancel"
            with steps.output(json=json, redact=_secret_values(environment)):
                play = Play(f"{verb} {environment.name}", StepContext(check=check or _dry(c)))
                if not chosen:
                    play.run(verb, lambda ctx: steps.Result.ok("nothing selected"))
                for inv in chosen:
                    play.run(inv.id, inv_mod.end_step(admin, inv, kill=kill, wait_s=wait))
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
        older = inv_mod.parse_duration("--older-than", older_than) if older_than else 0.0
        environment = _env(env)
        admin = _admin(environment)
        try:
            with steps.output(json=json, redact=_secret_values(environment)):
                play = Play(f"purge {environment.name}", StepContext(check=check or _dry(c)))
                play.run("purge", inv_mod.purge_step(admin, older_than_s=older))
                play.recap()
        finally:
            admin.close()
    if play.failed:
        raise Exit(code=1)


@task(help={"env": ENV_HELP})
def status(c: Context, env: str = "local") -> None:
    """Server health, deployments, services and handlers, processes with PIDs and ports."""
    with _errors():
        print("\n".join(status_lines(_env(env))))


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
    help={
        "env": ENV_HELP,
        "vus": "virtual users (default 10)",
        "duration": "hold duration, k6 format (default 30s)",
        "script": "checkout (default), hot-seat, or a path to a .js file",
        "seats": "seats to pick from at random (default 100)",
        "ramp": "ramp-up and ramp-down time (default 2s)",
        "out": "write the JSON summary (with the audit) to this file",
        "report": "write k6's HTML dashboard report to this file",
        "mix": "payment methods: default (80% success, 10% decline, 10% error) or success",
        "gateway_latency": "mock gateway: answer each charge after this many ms during the run",
    }
)
def load(
    c: Context,
    env: str = "local",
    vus: int = 10,
    duration: str = "30s",
    script: str = "checkout",
    seats: int = 100,
    ramp: str = "2s",
    out: str = "",
    report: str = "",
    mix: str = "default",
    gateway_latency: str = "",
) -> None:
    """Run a k6 load through the environment's ingress, then audit what it booked."""
    _refuse_dry(c, "load")
    environment = _env(env)
    latency = _milliseconds("--gateway-latency", gateway_latency) if gateway_latency else None
    with _errors(), loadrun.gateway_latency(environment, latency):
        run = loadrun.drive(
            environment,
            vus=vus,
            duration=duration,
            script=script,
            seats=seats,
            ramp=ramp,
            mix=mix,
            report_html=Path(report) if report else None,
        )
        result = loadrun.audit_run(environment, run)
    loadrun.print_result(result)
    if out:
        loadrun.write_json(result.to_dict(), Path(out))
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
    c: Context, env: str = "local", prefix: str = "", max_retries: int = inv_mod.DEFAULT_MAX_RETRIES
) -> None:
    """Check the booking invariants in Restate's state and the gateway's charges, and
    that no invocation is stuck."""
    with _errors():
        report = audit_mod.audit(_env(env), prefix=prefix, max_retries=max_retries)
    print("\n".join(report.lines()))
    if not report.ok:
        raise Exit(code=1)


@task(
    help={
        "env": ENV_HELP,
        "vus": "virtual users in both phases (default 32)",
        "duration": "length of each phase (default 20s)",
        "out": "write the figures as JSON to this file",
    }
)
def bench(
    c: Context, env: str = "local", vus: int = 32, duration: str = "20s", out: str = ""
) -> None:
    """Measure no-op calls vs. full checkouts on this machine: rate, ratio, latency, CPU."""
    _refuse_dry(c, "bench")
    with _errors():
        result = loadrun.bench(_env(env), vus=vus, duration=duration)
    print("\n".join(loadrun.bench_lines(result)))
    if out:
        loadrun.write_json(result, Path(out))
    if not result["ok"]:
        raise Exit("bench figures not valid: a phase had unexpected answers or a bad audit", 1)


@task(
    help={
        "env": ENV_HELP,
        "scenario": "one scenario or a comma-separated list (default: all): "
        + ", ".join(chaos_mod.SCENARIOS),
    }
)
def chaos(c: Context, env: str = "local", scenario: str = "") -> None:
    """Inject faults (kills, gateway outage, hot seat, bad input, ...) and check recovery."""
    _refuse_dry(c, "chaos")
    with _errors():
        outcomes = chaos_mod.run_chaos(_env(env), scenario or None)
    if any(o.status == "failed" for o in outcomes):
        raise Exit(code=1)


@task(help={"check": "show what would be built, build nothing"})
def build(c: Context, check: bool = False) -> None:
    """Build a wheel into dist/ and a container context (Dockerfile) for the service."""
    play = Play("build", StepContext(check=check or _dry(c)))
    with _errors():
        for name, step in Build(PROJECT_ROOT).steps():
            play.run(name, step)
    play.recap()
    if play.failed:
        raise Exit(code=1)


@task(help={"k": "only tests matching this pytest -k expression", "args": "extra pytest arguments"})
def test(c: Context, k: str = "", args: str = "") -> None:
    """Run the whole pytest suite (unit and integration, against a real restate-server)."""
    select = f" -k {shlex.quote(k)}" if k else ""
    c.run(f"{sys.executable} -m pytest{select} {args}", pty=False)
