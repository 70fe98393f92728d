"""Charts of a k6 run as one self-contained SVG (no script, no network): answers per
second by outcome, and each outcome's p99 latency per second, from k6's CSV samples.
The flash sale and the bench write one next to their JSON."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

from ops.base.errors import NexusError

#: lib/outcomes.js records every answer's duration in `checkout_duration_<outcome>`.
OUTCOME_TREND = "checkout_duration_"
COLOURS = {
    "confirmed": "#2e7d32",
    "sold_out": "#1565c0",
    "declined": "#ef6c00",
    "gateway_error": "#c62828",
    "unexpected": "#6a1b9a",
}
WIDTH, PANEL, MARGIN_L, MARGIN_R, TOP = 760, 170, 64, 150, 40


@dataclass
class Timeline:
    """Every answer of a run: outcome → [(answer time in epoch ms, duration in ms)]."""

    answers: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Timeline:
        """From k6's CSV output (`--out csv=...`, unix_milli timestamps)."""
        answers: dict[str, list[tuple[int, float]]] = defaultdict(list)
        with path.open(newline="") as fh:
            rows = csv.reader(fh)
            header = next(rows, [])
            try:
                name, stamp, value = (
                    header.index(c) for c in ("metric_name", "timestamp", "metric_value")
                )
            except ValueError:
                raise NexusError(f"{path}: not a k6 CSV output (header {header[:3]})") from None
            for row in rows:
                if row[name].startswith(OUTCOME_TREND):
                    outcome = row[name][len(OUTCOME_TREND) :]
                    answers[outcome].append((int(row[stamp]), float(row[value])))
        return cls(dict(answers))

    def of(self, outcome: str) -> list[tuple[int, float]]:
        return self.answers.get(outcome, [])

    @property
    def start_ms(self) -> int:
        return min((t - round(d) for rows in self.answers.values() for t, d in rows), default=0)

    def per_second(self) -> dict[str, list[tuple[int, float]]]:
        """outcome → [(second since the start, answers, p99 ms)] for each second with any."""
        start = self.start_ms
        found: dict[str, list[tuple[int, float]]] = {}
        for outcome, rows in sorted(self.answers.items()):
            buckets: dict[int, list[float]] = defaultdict(list)
            for t, d in rows:
                buckets[(t - start) // 1000].append(d)
            found[outcome] = [(s, len(v)) for s, v in sorted(buckets.items())]
            found[outcome + ":p99"] = [(s, _p99(v)) for s, v in sorted(buckets.items())]
        return found


def read_samples(path: Path | None) -> Timeline | None:
    """A run's answers from k6's CSV samples, which are removed once read (they hold
    every request of the run); None when k6 wrote none."""
    if path is None or not path.is_file():
        return None
    try:
        return Timeline.read(path)
    finally:
        path.unlink(missing_ok=True)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.99 * len(ordered)) - 1)]


def _nice(top: float) -> float:
    """A round axis maximum at or above `top`."""
    if top <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(top))
    return float(next(step * power for step in (1, 2, 2.5, 5, 10) if step * power >= top))


def svg(title: str, timeline: Timeline, marks: dict[str, float] | None = None) -> str:
    """Two panels over the run's seconds: answers per second, p99 ms per second, one line
    per outcome; `marks` draws labelled vertical lines (seconds since the start)."""
    series = timeline.per_second()
    outcomes = [o for o in series if not o.endswith(":p99")]
    last = max((s for rows in series.values() for s, _ in rows), default=0) + 1
    plot_w = WIDTH - MARGIN_L - MARGIN_R
    height = TOP + 2 * PANEL + 90
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}"'
        f' viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="{MARGIN_L}" y="22" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    for index, (label, suffix) in enumerate((("answers per second", ""), ("p99 ms", ":p99"))):
        y0 = TOP + index * (PANEL + 40) + 10
        peak = _nice(max((v for o in outcomes for _, v in series[o + suffix]), default=1.0))
        parts.append(
            f'<rect x="{MARGIN_L}" y="{y0}" width="{plot_w}" height="{PANEL}" fill="none"'
            ' stroke="#999"/>'
        )
        for tick in range(5):
            value = peak * tick / 4
            y = y0 + PANEL - PANEL * tick / 4
            parts.append(
                f'<line x1="{MARGIN_L - 4}" y1="{y:.1f}" x2="{MARGIN_L + plot_w}" y2="{y:.1f}"'
                f' stroke="#eee"/><text x="{MARGIN_L - 8}" y="{y + 4:.1f}"'
                f' text-anchor="end">{value:g}</text>'
            )
        parts.append(
            f'<text x="14" y="{y0 + PANEL / 2:.0f}" transform="rotate(-90 14'
            f' {y0 + PANEL / 2:.0f})" text-anchor="middle">{label}</text>'
        )
        for outcome in outcomes:
            points = " ".join(
                f"{MARGIN_L + plot_w * (s + 0.5) / last:.1f},{y0 + PANEL - PANEL * v / peak:.1f}"
                for s, v in series[outcome + suffix]
            )
            colour = COLOURS.get(outcome, "#555")
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"'
                f' data-outcome="{escape(outcome)}"/>'
            )
        for name, second in (marks or {}).items():
            x = MARGIN_L + plot_w * second / last
            parts.append(
                f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y0 + PANEL}" stroke="#000"'
                f' stroke-dasharray="4 3"/><text x="{x + 3:.1f}" y="{y0 + 12}">'
                f"{escape(name)}</text>"
            )
    axis_y = TOP + 2 * PANEL + 50 + 14
    for tick in range(0, last + 1, max(1, last // 10)):
        x = MARGIN_L + plot_w * tick / last
        parts.append(f'<text x="{x:.1f}" y="{axis_y}" text-anchor="middle">{tick}s</text>')
    for row, outcome in enumerate(outcomes):
        y = TOP + 20 + row * 18
        count = len(timeline.of(outcome))
        parts.append(
            f'<rect x="{WIDTH - MARGIN_R + 12}" y="{y - 9}" width="12" height="4"'
            f' fill="{COLOURS.get(outcome, "#555")}"/><text x="{WIDTH - MARGIN_R + 30}"'
            f' y="{y}">{escape(outcome)} ({count})</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write(
    path: Path, title: str, timeline: Timeline, marks: dict[str, float] | None = None
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(svg(title, timeline, marks))
    return path


def chart_path(json_out: Path) -> Path:
    """Where the chart of a run whose JSON goes to `json_out` is written: beside it."""
    return json_out.with_suffix(".svg")
