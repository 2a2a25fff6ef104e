"""flows.admin.charts: the trend chart's SVG (bars stacked by status, a round axis, escaped labels)."""

import re
from datetime import UTC, datetime, timedelta

from flows.admin.charts import trend_panel, trend_svg
from flows.services.reports import STATUSES, Trend


def _trend(**last_bucket: int) -> Trend:
    start = datetime(2026, 3, 10, tzinfo=UTC)
    counts = {s: [0] * 24 for s in STATUSES}
    for status, n in last_bucket.items():
        counts[status][-1] = n
    return Trend(span="24h", buckets=[start + timedelta(hours=i) for i in range(24)], counts=counts)


def _axis(svg: str) -> list[str]:
    return re.findall(r'text-anchor="end">([^<]+)<', svg)


def test_bars_stack_by_status_up_to_a_round_axis():
    svg = trend_svg(_trend(succeeded=4, failed=3))
    assert _axis(svg) == ["0", "5", "10"]  # 7 runs: the axis goes to 10
    heights = {s: float(h) for s, h in re.findall(r'lr-chart-(\w+)" x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)"', svg)}
    assert heights["succeeded"] / heights["failed"] == 4 / 3
    assert "23:00: 4 succeeded, 3 failed</title>" in svg and "00:00: no runs</title>" in svg


def test_an_empty_trend_draws_an_axis_of_one_and_no_bars():
    svg = trend_svg(_trend())
    assert _axis(svg) == ["0", "1"] and "lr-chart-bar" not in svg
    assert 'aria-label="Last 24 hours, per hour: 0 runs"' in svg


def test_the_panel_escapes_its_links_and_marks_the_chosen_range():
    html = trend_panel(_trend(queued=1), switch_urls={"24h": '?a="><script>', "30d": "?trends=30d"})
    assert "<script>" not in html and "&quot;&gt;&lt;script&gt;" in html
    assert 'class="lr-chart-range lr-selected" aria-current="true">24h<' in html
    assert "· 1 run <" in html
