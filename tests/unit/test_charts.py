"""The run charts (ops/testing/charts.py) from k6 CSV samples written here by hand."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from ops.base.errors import NexusError
from ops.testing.charts import Timeline, read_samples, svg

SVG = "{http://www.w3.org/2000/svg}"
HEADER = "metric_name,timestamp,metric_value,check,error,error_code,expected_response\n"


def samples(tmp_path: Path, rows: list[tuple[str, int, float]]) -> Path:
    path = tmp_path / "samples.csv"
    body = "".join(f"{name},{stamp},{value},,,,\n" for name, stamp, value in rows)
    path.write_text(HEADER + body)
    return path


def test_answers_are_bucketed_per_second_by_outcome(tmp_path: Path) -> None:
    # Answers at 0.1 s, 0.5 s and 2.2 s after the first request (which started at 0).
    path = samples(
        tmp_path,
        [
            ("checkout_duration_confirmed", 1_000_100, 100.0),
            ("checkout_duration_sold_out", 1_000_500, 20.0),
            ("checkout_duration_sold_out", 1_002_200, 40.0),
            ("checkout_duration", 1_002_200, 40.0),  # the all-outcomes trend: not a line
            ("http_reqs", 1_002_200, 1.0),
        ],
    )
    timeline = read_samples(path)
    assert timeline is not None and not path.exists()  # read once, then removed
    assert timeline.start_ms == 1_000_000
    assert timeline.per_second() == {
        "confirmed": [(0, 1)],
        "confirmed:p99": [(0, 100.0)],
        "sold_out": [(0, 1), (2, 1)],
        "sold_out:p99": [(0, 20.0), (2, 40.0)],
    }


def test_the_svg_draws_a_line_per_outcome_with_counts_and_marks(tmp_path: Path) -> None:
    timeline = Timeline(
        {
            "confirmed": [(1_000_100, 100.0), (1_001_100, 90.0)],
            "sold_out": [(1_001_500, 20.0)] * 5,
        }
    )
    root = ET.fromstring(svg("sale <1>", timeline, {"sold out": 1.1}))
    lines = {e.get("data-outcome"): e.get("points") for e in root.iter(f"{SVG}polyline")}
    assert set(lines) == {"confirmed", "sold_out"}
    texts = [e.text for e in root.iter(f"{SVG}text")]
    assert "sale <1>" in texts  # escaped in the file, the title as written
    assert "confirmed (2)" in texts and "sold_out (5)" in texts and "sold out" in texts


def test_a_file_that_is_not_k6_csv_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(NexusError, match="not a k6 CSV output"):
        Timeline.read(path)


def test_no_samples_no_timeline(tmp_path: Path) -> None:
    assert read_samples(None) is None and read_samples(tmp_path / "missing.csv") is None
