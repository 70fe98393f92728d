"""The flash sale's refusals split at the sell-out (ops/testing/flash_sale.py), from k6's
CSV samples."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops.base.errors import NexusError
from ops.testing.flash_sale import latency_group, sale_phases

HEADER = "metric_name,timestamp,metric_value,check,error,extra_tags\n"


def _csv(path: Path, rows: list[tuple[str, int, float]]) -> Path:
    lines = [f"{name},{stamp},{value:.6f},,,outcome=x\n" for name, stamp, value in rows]
    path.write_text(HEADER + "".join(lines))
    return path


def test_refusals_split_at_the_last_winners_answer_by_arrival(tmp_path: Path) -> None:
    samples = _csv(
        tmp_path / "s.csv",
        [
            ("checkout_duration_confirmed", 1_000, 300.0),
            ("checkout_duration_sold_out", 1_100, 50.0),  # arrived at 1,050: before
            ("checkout_duration_confirmed", 2_000, 400.0),  # the last winner: 2,000
            ("checkout_duration_sold_out", 2_050, 100.0),  # arrived at 1,950: before
            ("checkout_duration_sold_out", 2_010, 10.0),  # arrived at 2,000: after
            ("checkout_duration_sold_out", 3_000, 20.0),  # after
            ("http_req_duration", 3_000, 999.0),  # other metrics are ignored
            ("checkout_duration_declined", 3_000, 999.0),
        ],
    )
    before, after = sale_phases(samples, sold_out=True)
    assert before == {"count": 2, "p50_ms": 75.0, "p99_ms": 99.5}
    assert after == {"count": 2, "p50_ms": 15.0, "p99_ms": 19.9}
    assert not samples.exists()  # read once, then removed


def test_a_sale_not_sold_out_has_no_refusals_after_it(tmp_path: Path) -> None:
    samples = _csv(
        tmp_path / "s.csv",
        [("checkout_duration_confirmed", 1_000, 300.0), ("checkout_duration_sold_out", 5_000, 9.0)],
    )
    before, after = sale_phases(samples, sold_out=False)
    assert before["count"] == 1 and after == {"count": 0, "p50_ms": 0.0, "p99_ms": 0.0}


def test_no_samples_file_gives_empty_groups(tmp_path: Path) -> None:
    assert sale_phases(None, sold_out=True) == sale_phases(tmp_path / "gone.csv", sold_out=True)
    assert sale_phases(None, sold_out=True)[0]["count"] == 0


def test_a_file_that_is_not_k6_csv_is_named(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(NexusError, match="not a k6 CSV output"):
        sale_phases(path, sold_out=True)


def test_percentiles_interpolate_between_ranks_as_k6_does() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert latency_group(values) == {"count": 100, "p50_ms": 50.5, "p99_ms": 99.01}
    assert latency_group([7.0]) == {"count": 1, "p50_ms": 7.0, "p99_ms": 7.0}
