"""Chaos scenario `rollout`: a new service version under load never breaks a checkout in
flight, and neither does going back.

Checkouts are held at a slowed gateway (charged, not confirmed) while a load runs; then a
version whose journal differs from the running one (a copy of the service with one more
durable step at the start of the saga) is deployed. Every checkout in flight must finish
on the deployment it started on, new ones must run on the new version, no invocation may
hit a journal mismatch, and the old version must be retired once drained. Then the
original sources are deployed again (a rollback: one more version) under the same load.

`in_place=True` swaps the code under the running deployment instead, as deploys did
before versions: the scenario must then fail, which shows that its checks can."""

from __future__ import annotations

import io
import shutil
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from ops.base.errors import NexusError
from ops.base.processes import poll_until
from ops.chaos.base import (
    ChaosContext,
    Reply,
    checkout,
    expect_audit,
    gateway_faults,
    require_mock_gateway,
)
from ops.chaos.crashes import LOAD_WORKERS, BackgroundLoad
from ops.clients.invocations import by_idempotency_key, open_invocations
from ops.operations.audit import audit
from ops.release.release import ReleaseOptions
from ops.release.rollout import newest
from ops.release.stack import deploy
from ops.release.versions import snapshot
from ops.testing.checks import CheckFailed, Skip, expect

IN_FLIGHT = 5  # checkouts held at the gateway when the new version is registered
HOLD_LATENCY_MS = 3000  # ... this long, so the switch lands while they are charged
AFTER_SWITCH = 4  # checkouts sent once the new version is active
ANSWER_TIMEOUT_S = 45.0  # a checkout stuck on a journal mismatch never answers
DRAIN_TIMEOUT_S = 30.0
MISMATCH = ("RT0016", "Journal mismatch", "journal mismatch")

# One more durable step before the hold and the charge: the kind of change every release
# makes, and one that makes a replay of an old journal diverge at its first command.
_ANCHOR = "        await _take_seat(ctx, req.ticket_id, holder)\n"
_EXTRA_STEP = '        await ctx.run_typed("fraud-check", _fraud_check, ticket_id=req.ticket_id)\n'
_EXTRA_FN = '''

async def _fraud_check(ticket_id: str) -> bool:
    """Rollout test build: a durable step the running version does not have."""
    return bool(ticket_id)
'''


def variant_sources(root: Path, into: Path) -> Path:
    """A copy of `root/service` with one more durable step in the checkout saga."""
    target = into / "service"
    shutil.copytree(root / "service", target, ignore=shutil.ignore_patterns("__pycache__"))
    saga = target / "checkout.py"
    text = saga.read_text()
    if _ANCHOR not in text:
        raise NexusError(f"rollout: cannot find the hold in {saga} to put a step before it")
    saga.write_text(text.replace(_ANCHOR, _EXTRA_STEP + _ANCHOR) + _EXTRA_FN)
    return target


def rollout(cx: ChaosContext, *, in_place: bool = False) -> str:
    """Deploy a journal-changing version with checkouts in flight, then roll back."""
    env = cx.env
    if env.service_mode not in ("process", "container") or env.runtime == "external":
        raise Skip(f"needs a service the toolkit runs (mode process, here {env.service_mode})")
    if in_place and env.service_mode != "process":
        raise Skip("the in-place swap runs other sources under a process: mode process only")
    require_mock_gateway(cx)
    release = cx.stack.release
    old = newest(release.deployments())
    if old is None or old.instance is None:
        raise Skip(f"no versioned service deployed on {env.name}: deploy it first")
    work = Path(tempfile.mkdtemp(prefix="nexus-rollout-"))
    seats = [cx.seat("rollout-inflight") for _ in range(IN_FLIGHT)]
    keys = [f"chaos-{cx.run_id}-rollout-{i}" for i in range(IN_FLIGHT)]
    load = BackgroundLoad(cx, "rollout-load", LOAD_WORKERS, max_seconds=120.0)
    swapped = False
    new = None
    try:
        variant = variant_sources(env.root, work)
        with gateway_faults(cx) as gw, ThreadPoolExecutor(IN_FLIGHT + AFTER_SWITCH) as pool:
            gw.configure(latency_ms=HOLD_LATENCY_MS)
            before = gw.attempts()
            load.start()
            held: list[Future[Reply]] = [
                pool.submit(_checkout, cx, seat, f"inflight-{i}", key)
                for i, (seat, key) in enumerate(zip(seats, keys, strict=True))
            ]
            reached = poll_until(lambda: gw.attempts() >= before + IN_FLIGHT, 20.0, 0.05)
            expect(reached, "the held checkouts did not reach the gateway within 20 s")
            switched_at = time.monotonic()
            try:
                if in_place:
                    _swap_in_place(cx, variant, work)
                    swapped = True
                    switch = f"swapped the code under {old.id} in place"
                else:
                    switch = _deploy(cx, ReleaseOptions(sources=variant), "new version")
                new = newest(release.deployments())
                mismatches = _watch_mismatches(cx, held, seconds=HOLD_LATENCY_MS / 1000 + 3)
                if mismatches:
                    report = audit(cx.env, prefix=cx.prefix)
                    raise CheckFailed(
                        f"{len(mismatches)} invocations stuck on a journal mismatch"
                        f" ({report.lines()[0]}): {mismatches[:2]}"
                    )
            finally:
                gw.configure(latency_ms=0)
                if swapped:  # let the stuck ones replay on their own code and finish
                    _restore_in_place(cx)
                    swapped = False
            expect(new is not None, "no deployment after the switch")
            assert new is not None
            fresh = [cx.seat("rollout-new") for _ in range(AFTER_SWITCH)]
            after = [
                pool.submit(_checkout, cx, seat, f"after-{i}", f"{keys[0]}-after-{i}")
                for i, seat in enumerate(fresh)
            ]
            answers = [_answer(f) for f in held]
            later = [_answer(f) for f in after]
            took = time.monotonic() - switched_at
        requests = load.stop()
        pinned = _pinned(cx, keys)
        pinned_after = _pinned(cx, [f"{keys[0]}-after-{i}" for i in range(AFTER_SWITCH)])
        bad = [f"{s}: {a.brief()}" for s, a in zip(seats, answers, strict=True) if a.status != 200]
        expect(
            not bad, f"{len(bad)}/{IN_FLIGHT} checkouts in flight at the switch failed: {bad[:2]}"
        )
        expect(
            all(pinned.get(k) == old.id for k in keys),
            f"checkouts in flight did not all finish on {old.id}: {sorted(set(pinned.values()))}",
        )
        expect(
            all(a.status == 200 for a in later), f"after the switch: {[a.brief() for a in later]}"
        )
        expect(
            new.id != old.id and all(p == new.id for p in pinned_after.values()),
            f"new checkouts ran on {sorted(set(pinned_after.values()))}, not a new deployment",
        )
        failed_load = [r for r in requests if r.first.status != 200]
        expect(
            not failed_load,
            f"{len(failed_load)}/{len(requests)} load bookings failed, e.g."
            f" {failed_load[0].first.brief() if failed_load else ''}",
        )
        retired = _retired(cx, old.id, old.instance.name, variant)
        back = _rollback(cx)
        figures = expect_audit(cx, f"{cx.prefix}rollout")
    finally:
        load.stop()  # a no-op when it already stopped
        shutil.rmtree(work, ignore_errors=True)
    return (
        f"{IN_FLIGHT} checkouts in flight at the switch ({switch}): {IN_FLIGHT}/{IN_FLIGHT} 200"
        f" on {old.id}; {AFTER_SWITCH}/{AFTER_SWITCH} new ones 200 on {new.id}; load"
        f" {len(requests)}/{len(requests)} 200; 0 journal mismatches; all answered"
        f" {took:.1f}s after the switch; {retired}; {back}; {figures}"
    )


def _checkout(cx: ChaosContext, seat: str, user: str, key: str) -> Reply:
    client = cx.client(timeout=ANSWER_TIMEOUT_S)
    try:
        return checkout(client, seat, user, idempotency_key=key, timeout=ANSWER_TIMEOUT_S)
    finally:
        client.close()


def _answer(future: Future[Reply]) -> Reply:
    return future.result(timeout=ANSWER_TIMEOUT_S + 10)


def _deploy(cx: ChaosContext, options: ReleaseOptions, what: str) -> str:
    out = io.StringIO()
    started = time.monotonic()
    play = deploy(cx.env, out=out, options=options)
    recap = out.getvalue().strip().splitlines()[-1]
    if play.failed:
        raise CheckFailed(f"deploy of the {what} failed: {out.getvalue()[-600:]}")
    return f"{what} deployed in {time.monotonic() - started:.1f}s, {recap.split('] ', 1)[-1]}"


def _watch_mismatches(cx: ChaosContext, held: list[Future[Reply]], seconds: float) -> list[str]:
    """Invocations that failed on a journal mismatch while the held checkouts finish."""
    found: dict[str, str] = {}
    deadline = time.monotonic() + seconds
    admin = cx.admin()
    try:
        while time.monotonic() < deadline and not all(f.done() for f in held):
            for inv in open_invocations(admin):
                failure = f"{inv.failure_code or ''} {inv.last_failure or ''}"
                if any(m in failure for m in MISMATCH):
                    found[inv.id] = f"{inv.target}: {failure[:160]}"
            time.sleep(0.25)
    finally:
        admin.close()
    return sorted(found.values())


def _pinned(cx: ChaosContext, keys: list[str]) -> dict[str, str]:
    """Idempotency key → the deployment its invocation ran on."""
    admin = cx.admin()
    try:
        rows = by_idempotency_key(admin, keys=keys)
    finally:
        admin.close()
    return {str(r["idempotency_key"]): str(r.get("pinned_deployment_id")) for r in rows}


def _retired(cx: ChaosContext, old_id: str, old_process: str, variant: Path) -> str:
    """Deploy the same version again with a drain timeout: the old one is retired."""
    started = time.monotonic()
    _deploy(cx, ReleaseOptions(sources=variant, drain_timeout=DRAIN_TIMEOUT_S), "same version")
    ids = {d.id for d in cx.stack.release.deployments()}
    expect(old_id not in ids, f"{old_id} still registered after draining")
    expect(not cx.stack.release.instance_alive(old_process), f"{old_process} still runs")
    took = time.monotonic() - started
    return f"old version retired {took:.1f}s later (process stopped, deployment removed)"


def _rollback(cx: ChaosContext) -> str:
    """The original sources again, under load: one more version, nothing breaks."""
    load = BackgroundLoad(cx, "rollout-back", LOAD_WORKERS, max_seconds=60.0).start()
    try:
        time.sleep(1.0)
        what = _deploy(cx, ReleaseOptions(drain_timeout=DRAIN_TIMEOUT_S), "rollback")
        time.sleep(1.0)
    finally:
        requests = load.stop()
    bad = [r for r in requests if r.first.status != 200]
    expect(bool(requests) and not bad, f"rollback under load: {len(bad)}/{len(requests)} failed")
    versions = cx.stack.release.deployments()
    expect(len(versions) == 1, f"{len(versions)} versions left after the rollback drained")
    return f"rollback under load: {what}, {len(requests)}/{len(requests)} bookings 200"


def _swap_in_place(cx: ChaosContext, variant: Path, work: Path) -> None:
    """What deploy did before versions: new code behind the same endpoint."""
    release = cx.stack.release
    instance = cx.stack.service_instance()
    spec = release.spec(instance)
    home = snapshot(variant, work / "versions", "in-place")
    env = {**spec.env, "PYTHONPATH": str(home)}
    cx.stack.procs.stop(instance.name)
    cx.stack.procs.start(replace(spec, cwd=home, env=env))


def _restore_in_place(cx: ChaosContext) -> None:
    """Put the version's own code back behind its endpoint; the stuck invocations then
    replay and finish."""
    instance = cx.stack.service_instance()
    cx.stack.procs.stop(instance.name)
    cx.stack.procs.start(cx.stack.release.spec(instance))
