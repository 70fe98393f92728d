"""`invoke load`: a k6 run against an environment, followed by the audit of what it
booked; `--script flash-sale` adds the sale's figures and checks."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, TextIO

from ops.base.environments import Environment
from ops.operations.audit import AuditReport, audit
from ops.testing import k6
from ops.testing.flash_sale import FlashSale, audit_sale, flash_sale
from ops.testing.host_cpu import steal_line
from ops.testing.runs import BENCH_SCRIPTS, FLASH_SALE, K6Run


@dataclass
class LoadResult:
    summary: k6.LoadSummary
    audit: AuditReport
    run_id: str
    sale: FlashSale | None = None
    host_steal_pct: float = 0.0  # CPU time the hypervisor took while k6 ran

    @property
    def ok(self) -> bool:
        return not self.problems()

    def problems(self) -> list[str]:
        """Why the run failed, one line per reason; empty when it passed."""
        found = self.run_problems()
        if self.sale is not None and not self.sale.sold_out and not self.summary.interrupted:
            found.append(
                f"not sold out: {self.sale.sold} of {self.sale.seats} seats sold in"
                f" {self.sale.duration} (run longer, or at a higher rate)"
            )
        if not self.audit.ok:
            found.append(f"audit: {len(self.audit.violations)} violation(s)")
        return found

    def run_problems(self) -> list[str]:
        """What went wrong in k6's run itself, leaving the audit aside."""
        found = []
        if self.summary.outcomes["unexpected"]:
            found.append(f"{self.summary.outcomes['unexpected']} unexpected answers")
        if self.summary.exit_code or not self.summary.thresholds_ok:
            crossed = self.summary.crossed
            named = f": threshold crossed: {', '.join(crossed)}" if crossed else ""
            found.append(f"k6 {self.summary.exit_text}{named}")
        return found

    def to_dict(self) -> dict[str, Any]:
        sale = self.sale.to_dict() if self.sale is not None else {}
        return {
            **self.summary.to_dict(),
            **sale,
            "run_id": self.run_id,
            "host_steal_pct": self.host_steal_pct,
            "audit": self.audit.to_dict(),
        }


def audit_run(env: Environment, run: K6Run) -> LoadResult:
    """The run with the audit of the seats it booked, and k6's count of confirmed
    bookings held against the seats sold."""
    if run.script in BENCH_SCRIPTS:
        notes = [f"{run.script}: bench-only load"]
        return LoadResult(
            run.summary, AuditReport(notes=notes), run.run_id, host_steal_pct=run.host_steal_pct
        )
    report = audit(env, prefix=run.prefix)
    confirmed = run.summary.outcomes["confirmed"]
    sold = report.checked.get("sold")
    # A run cut short (Ctrl-C) stopped waiting for the checkouts in flight; they run on in
    # Restate, and each may still sell its seat.
    full_run = run.summary.exit_code in (0, k6.THRESHOLDS_FAILED_EXIT)
    if sold is None or sold < confirmed or (full_run and sold != confirmed):
        report.violations.append(
            f"k6 saw {confirmed} confirmed bookings but {sold} seats of run {run.run_id} are SOLD"
        )
    elif sold > confirmed:
        report.notes.append(
            f"{sold - confirmed} seat(s) sold by checkouts whose answer k6 did not wait for"
            f" (k6 stopped: {run.summary.exit_text})"
        )
    sale = None
    if run.script == FLASH_SALE:
        sale = flash_sale(run)
        audit_sale(env, run, report)
    return LoadResult(run.summary, report, run.run_id, sale, run.host_steal_pct)


def print_result(result: LoadResult, out: TextIO | None = None) -> None:
    stream = out or sys.stdout
    print(k6.render_table(result.summary), file=stream)
    if result.sale is not None:
        print("\n".join(result.sale.lines()), file=stream)
    print(steal_line(result.host_steal_pct), file=stream)
    print("\n".join(result.audit.lines()), file=stream, flush=True)
