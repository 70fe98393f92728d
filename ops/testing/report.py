"""The first screen of `invoke load --report`: k6's dashboard export, with a page of our
own in front of it that says whether the run passed.

k6's export renders offline but shows a failed run exactly like a green one. The first
screen gives the verdict and why, each threshold (crossed ones marked), the outcomes per
second, latency per outcome class, the audit's verdict, and the environment, service
version and commit. Everything is inline (CSS and SVG, no script, no network).

The outcomes per second come from the export itself: k6 keeps its per-period aggregates
in `<script id="data">` as base64 of gzipped JSON lines; each `snapshot` event holds one
array per metric, in the sorted order of the metric names that the `metric` events
announced so far (a counter's array is `[count, rate]`, empty when it had no samples)."""

from __future__ import annotations

import base64
import gzip
import html
import json
import re
from pathlib import Path
from typing import Any

from ops.base.environments import Environment
from ops.release.versions import git_commit

OUTCOME_COLOURS = {
    "confirmed": "#2e7d32",
    "sold_out": "#1565c0",
    "declined": "#ef6c00",
    "gateway_error": "#c62828",
    "unexpected": "#6a1b9a",
}
_DATA = re.compile(r'(<script id="data"[^>]*>)(.*?)(</script>)', re.S)
SCREEN_ID = "nexus-first-screen"


def timeline(export: str) -> list[dict[str, int]]:
    """Outcome counts per dashboard period (one dict per snapshot), from k6's export."""
    match = _DATA.search(export)
    if match is None:
        return []
    text = gzip.decompress(base64.b64decode("".join(match.group(2).split()))).decode()
    names: list[str] = []
    periods: list[dict[str, int]] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        event = json.loads(line)
        if event.get("event") == "metric":
            names = sorted({*names, *event.get("data", {})})
        elif event.get("event") == "snapshot":
            counts: dict[str, int] = {}
            for name, values in zip(names, event.get("data", []), strict=False):
                if name.startswith("outcome_") and "{" not in name and values:
                    counts[name.removeprefix("outcome_")] = int(values[0])
            periods.append(counts)
    return periods


def _bars(values: dict[str, float], unit: str, width: int = 420) -> str:
    """A horizontal bar chart, one bar per key (inline SVG)."""
    top = max(values.values(), default=0) or 1
    rows = []
    for i, (name, value) in enumerate(values.items()):
        length = int((width - 220) * value / top)
        colour = OUTCOME_COLOURS.get(name.split(" ")[0], "#455a64")
        y = i * 24
        rows.append(
            f'<text x="0" y="{y + 15}">{html.escape(name)}</text>'
            f'<rect x="150" y="{y + 3}" width="{length}" height="16" fill="{colour}"/>'
            f'<text x="{154 + length}" y="{y + 15}">{value:,.0f} {unit}</text>'
        )
    height = 24 * len(values) or 24
    return f'<svg width="{width}" height="{height}" role="img">{"".join(rows)}</svg>'


def _over_time(periods: list[dict[str, int]], width: int = 640, height: int = 160) -> str:
    """Stacked columns of outcomes per period (inline SVG)."""
    if not periods:
        return "<p>No per-second data in k6's export.</p>"
    top = max((sum(p.values()) for p in periods), default=0) or 1
    step = width / len(periods)
    shapes = []
    for i, counts in enumerate(periods):
        y = float(height)
        for name in OUTCOME_COLOURS:
            part = counts.get(name, 0) * (height - 10) / top
            if part:
                y -= part
                shapes.append(
                    f'<rect x="{i * step:.1f}" y="{y:.1f}" width="{max(step - 1, 1):.1f}"'
                    f' height="{part:.1f}" fill="{OUTCOME_COLOURS[name]}"/>'
                )
    legend = " ".join(f'<span style="color:{c}">■ {n}</span>' for n, c in OUTCOME_COLOURS.items())
    return (
        f'<svg width="{width}" height="{height}" role="img">{"".join(shapes)}</svg>'
        f"<div>{legend} · peak {top} answers in a period; {len(periods)} periods</div>"
    )


def first_screen(result: dict[str, Any], context: dict[str, str], export: str) -> str:
    """The first screen's HTML for one run: `result` is what `--out` writes."""
    problems = [str(p) for p in result.get("problems", [])]
    passed = not problems
    verdict = "PASSED" if passed else "FAILED"
    colour = "#2e7d32" if passed else "#c62828"
    thresholds = "".join(
        f'<li class="{"ok" if t["ok"] else "crossed"}">'
        f"{'ok' if t['ok'] else 'CROSSED'}: {html.escape(t['metric'])}"
        f" {html.escape(t['expression'])}</li>"
        for t in result.get("thresholds", [])
    )
    audit = result.get("audit", {})
    audit_text = "clean" if audit.get("ok") else f"{len(audit.get('violations', []))} violations"
    latency = {
        f"{name} p99": float(v.get("p99_ms", 0))
        for name, v in result.get("latency_by_outcome", {}).items()
    }
    outcomes = {k: float(v) for k, v in result.get("outcomes", {}).items()}
    facts = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in context.items()
    )
    why = "".join(f"<li>{html.escape(p)}</li>" for p in problems)
    return f"""<section id="{SCREEN_ID}" style="font:14px sans-serif;padding:16px 24px;
border-bottom:4px solid {colour};background:#fff;color:#222">
<style>#{SCREEN_ID} .crossed{{color:#c62828;font-weight:bold}} #{SCREEN_ID} .ok{{color:#2e7d32}}
#{SCREEN_ID} svg text{{font:12px sans-serif}}
#{SCREEN_ID} th{{text-align:left;padding-right:12px}}</style>
<h1 style="color:{colour};margin:0 0 8px">Load run {verdict}</h1>
{f"<ul>{why}</ul>" if why else ""}
<table>{facts}
<tr><th>audit</th><td>{html.escape(audit_text)}</td></tr>
<tr><th>answers</th><td>{result.get("requests", 0)} at {result.get("checkouts_per_s", 0)}/s,
p99 {result.get("p99_ms", 0)} ms, dropped {result.get("dropped_iterations", 0)}</td></tr></table>
<h2>Thresholds</h2><ul>{thresholds or "<li>none</li>"}</ul>
<h2>Outcomes per second</h2>{_over_time(timeline(export))}
<h2>Outcomes</h2>{_bars(outcomes, "")}
<h2>Latency per outcome</h2>{_bars(latency, "ms")}
<p>Below: k6's own dashboard.</p></section>"""


def add_first_screen(report: Path, result: dict[str, Any], context: dict[str, str]) -> None:
    """Put the first screen at the top of k6's exported report (once)."""
    export = report.read_text()
    if SCREEN_ID in export:
        export = re.sub(rf'<section id="{SCREEN_ID}".*?</section>', "", export, flags=re.S)
    screen = first_screen(result, context, export)
    body = re.search(r"<body[^>]*>", export)
    at = body.end() if body else 0
    report.write_text(export[:at] + screen + export[at:])


def run_context(env: Environment, run_id: str) -> dict[str, str]:
    """What the first screen names: the environment, the service version, the commit."""
    from ops.release.stack import Stack  # the stack builds on nearly every module; only here

    return {
        "environment": f"{env.name} ({env.file})",
        "service version": Stack(env).version,
        "commit": git_commit(env.root) or "not a git checkout",
        "run id": run_id,
    }
