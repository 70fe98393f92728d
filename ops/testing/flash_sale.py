"""`invoke load --script flash-sale`: the sale's own figures (seats sold, time to sell
out, refusals before and after the sell-out) and checks (one charge per seat sold)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ops.base.environments import Environment
from ops.clients.admin import AdminClient
from ops.operations.audit import AuditReport, read_charges, read_tickets
from ops.testing import charts
from ops.testing.charts import Timeline, read_samples
from ops.testing.runs import K6Run
from service.models import TicketStatus


@dataclass
class FlashSale:
    """What a flash sale offered, and how its seats went (from k6's summary)."""

    seats: int
    rate: int
    duration: str
    sold: int  # winners: confirmed answers
    sellout_s: float | None  # first request to the last winner's answer; None: not sold out
    winners: dict[str, float] = field(default_factory=dict)  # count, p50_ms, p99_ms
    refused: dict[str, float] = field(default_factory=dict)
    # the refused buyers apart: those who arrived before the last winner's answer, and after
    refused_before_sellout: dict[str, float] = field(default_factory=dict)
    refused_after_sellout: dict[str, float] = field(default_factory=dict)
    timeline: Timeline | None = field(default=None, repr=False)  # every answer (for charts)

    @property
    def sold_out(self) -> bool:
        return self.sold >= self.seats

    def to_dict(self) -> dict[str, Any]:
        return {
            "seats": self.seats,
            "rate": self.rate,
            "sale_duration": self.duration,
            "sold": self.sold,
            "sold_out": self.sold_out,
            "sellout_s": self.sellout_s,
            "winners": dict(self.winners),
            "refused": dict(self.refused),
            "refused_before_sellout": dict(self.refused_before_sellout),
            "refused_after_sellout": dict(self.refused_after_sellout),
        }

    def lines(self) -> list[str]:
        def latency(group: dict[str, float]) -> str:
            if not group.get("count"):
                return "none"
            count = f"{group['count']:.0f}"
            return f"p50 {group['p50_ms']:.1f} ms   p99 {group['p99_ms']:.1f} ms   ({count})"

        sellout = (
            f"sold out in {self.sellout_s:.2f} s" if self.sellout_s is not None else "NOT sold out"
        )
        return [
            f"flash sale       {self.seats} seats, {self.rate} buyers/s for {self.duration}",
            f"sold             {self.sold} of {self.seats}   {sellout}",
            f"winners (200)    {latency(self.winners)}",
            f"refused (409)    {latency(self.refused)}",
            f"  before sellout {latency(self.refused_before_sellout)}",
            f"  after sellout  {latency(self.refused_after_sellout)}",
        ]


def flash_sale(run: K6Run) -> FlashSale:
    """The sale's figures from k6's summary: seats sold, time to sell out, and the
    latency of winners (200) and refused buyers (409) apart."""
    summary = run.summary
    sold = summary.outcomes["confirmed"]
    first = summary.values("sale_first_request_ms")
    last = summary.values("sale_last_sold_ms")
    sellout_s = None
    if sold >= run.seats > 0 and "min" in first and "max" in last:
        sellout_s = round((float(last["max"]) - float(first["min"])) / 1000.0, 3)
    none = {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0}
    timeline = read_samples(run.samples_csv)
    before, after = sale_phases_of(timeline, sold_out=sold >= run.seats > 0)
    return FlashSale(
        seats=run.seats,
        rate=run.rate or 0,
        duration=run.duration,
        sold=sold,
        sellout_s=sellout_s,
        winners=dict(summary.latency_by_outcome.get("confirmed", none)),
        refused=dict(summary.latency_by_outcome.get("sold_out", none)),
        refused_before_sellout=before,
        refused_after_sellout=after,
        timeline=timeline,
    )


# --- the flash sale's refusals before and after the sell-out ----------------------------


def sale_phases(path: Path | None, *, sold_out: bool) -> tuple[dict[str, float], dict[str, float]]:
    """`sale_phases_of` the samples in `path` (removed once read)."""
    return sale_phases_of(read_samples(path), sold_out=sold_out)


def sale_phases_of(
    timeline: Timeline | None, *, sold_out: bool
) -> tuple[dict[str, float], dict[str, float]]:
    """Latency of the refused buyers who arrived (answer time less duration) before the
    last winner's answer, and of those who arrived after it: the surge a sold-out show
    absorbs. A sale that did not sell out has no "after"."""
    if timeline is None:
        empty = latency_group([])
        return empty, empty
    winners, refused = timeline.of("confirmed"), timeline.of("sold_out")
    sellout = max(t for t, _ in winners) if sold_out and winners else None
    before = [d for t, d in refused if sellout is None or t - d < sellout]
    after = [d for t, d in refused if sellout is not None and t - d >= sellout]
    return latency_group(before), latency_group(after)


def sellout_second(sale: FlashSale) -> float | None:
    """Seconds from the sale's first request to its last winner's answer (for charts)."""
    if sale.timeline is None or not sale.sold_out or not sale.timeline.of("confirmed"):
        return None
    last = max(t for t, _ in sale.timeline.of("confirmed"))
    return (last - sale.timeline.start_ms) / 1000.0


def latency_group(durations: Sequence[float]) -> dict[str, float]:
    """count, p50_ms and p99_ms, interpolated between ranks as k6 does."""
    ordered = sorted(durations)
    return {
        "count": len(ordered),
        "p50_ms": round(_percentile(ordered, 0.50), 3),
        "p99_ms": round(_percentile(ordered, 0.99), 3),
    }


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    if not ordered:
        return 0.0
    rank = fraction * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def sale_seat_id(prefix: str, number: int) -> str:
    """Ticket id of seat `number` (1-based) of a flash sale; twin of flash-sale.js."""
    return f"{prefix}seat-{number}"


def audit_sale(env: Environment, run: K6Run, report: AuditReport) -> None:
    """The sale's own figures, added to `report`: seats SOLD outside the sale or beyond
    the seats offered (violations), seats with more than one live charge, sold seats with
    exactly one live charge by their holder, and live charges of buyers who got no seat
    (refused with 409, declined or failed). The charge rules themselves are the general
    audit's, which already reports each breach as a violation; here they are counted."""
    admin = AdminClient(env.admin.url, env.token)
    try:
        seats = read_tickets(admin, run.prefix)
    finally:
        admin.close()
    offered = {sale_seat_id(run.prefix, n) for n in range(1, run.seats + 1)}
    holders = {
        seat: states[-1].reserved_by
        for seat, states in seats.items()
        if states[-1].status is TicketStatus.SOLD
    }
    outside = sorted(set(holders) - offered)
    report.checked["seats_offered"] = run.seats
    report.checked["sold_outside_the_sale"] = len(outside)
    report.violations += [f"{seat}: SOLD but not one of the sale's seats" for seat in outside]
    if len(holders) > run.seats:
        report.violations.append(f"oversold: {len(holders)} seats SOLD, {run.seats} offered")
    if env.gateway_mode != "mock":
        report.notes.append("sale: the gateway cannot list charges; charges not checked")
        return
    live = [
        c
        for c in read_charges(env.gateway.url)
        if str(c.get("ticketId") or "").startswith(run.prefix)
        and c.get("status") == "succeeded"
        and not c.get("refunded")
    ]
    per_seat = Counter(str(c["ticketId"]) for c in live)
    paid_twice = sorted(seat for seat, n in per_seat.items() if n > 1)
    one_each = sum(
        1
        for seat, holder in holders.items()
        if per_seat[seat] == 1
        and any(c["ticketId"] == seat and c.get("userId") == holder for c in live)
    )
    # A seat still RESERVED is held by a checkout that has not answered: its charge may
    # precede its confirm (the general audit allows that while the checkout runs).
    in_flight = {
        seat for seat, states in seats.items() if states[-1].status is TicketStatus.RESERVED
    }
    not_winners = [
        c
        for c in live
        if holders.get(str(c["ticketId"])) != c.get("userId") and c["ticketId"] not in in_flight
    ]
    report.checked["seats_paid_twice"] = len(paid_twice)
    report.checked["sold_with_one_live_charge"] = one_each
    report.checked["live_charges_of_buyers_without_a_seat"] = len(not_winners)


def write_chart(sale: FlashSale, path: Path, run_id: str) -> Path | None:
    """The sale's chart (answers and p99 per second, the sell-out marked), or None when
    k6 left no samples."""
    if sale.timeline is None:
        return None
    second = sellout_second(sale)
    marks = {"sold out": second} if second is not None else {}
    title = f"flash sale {run_id}: {sale.seats} seats, {sale.rate} buyers/s, {sale.sold} sold"
    return charts.write(path, title, sale.timeline, marks)
