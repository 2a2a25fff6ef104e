"""The runs list's trend chart: stacked bars of runs per hour or day by status, drawn on the server as inline SVG.

Colours and text come from CSS classes (flows/static/flows/admin.css) over the admin's own variables, so the chart
follows the light and dark themes with no script.
"""

from __future__ import annotations

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from flows.services.reports import STATUSES, Trend

WIDTH, HEIGHT = 720, 150
LEFT, RIGHT, BOTTOM, TOP = 34, 20, 18, 8
RANGE_LABELS = {"24h": "Last 24 hours, per hour", "30d": "Last 30 days, per day"}


def _n(value: float) -> str:
    return f"{value:.1f}"


def _bucket_label(trend: Trend, i: int) -> str:
    bucket = trend.buckets[i]
    return bucket.strftime("%H:%M") if trend.span == "24h" else bucket.strftime("%b %d")


def _scale_max(peak: int) -> int:
    """A round top for the axis: 1, 2, 5, 10, 20, 50 …"""
    base = 1
    while True:
        for factor in (1, 2, 5):
            if base * factor >= peak:
                return base * factor
        base *= 10


def trend_svg(trend: Trend) -> SafeString:
    count = len(trend.buckets)
    top = _scale_max(max(trend.totals, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / count
    bar_w = max(1.0, slot * 0.75)
    parts = []
    for fraction in (0, 0.5, 1) if top % 2 == 0 else (0, 1):  # runs are counted whole: no "0.5" on the axis
        y = TOP + plot_h * (1 - fraction)
        parts.append(format_html('<line class="lr-chart-grid" x1="{}" x2="{}" y1="{}" y2="{}"/>', LEFT, WIDTH - RIGHT, _n(y), _n(y)))
        label = f"{top * fraction:g}"
        parts.append(format_html('<text class="lr-chart-axis" x="{}" y="{}" text-anchor="end">{}</text>', LEFT - 4, _n(y + 4), label))
    every = 4 if trend.span == "24h" else 5
    for i in range(count):
        x = LEFT + slot * i + (slot - bar_w) / 2
        y = TOP + plot_h
        described = [f"{trend.counts[s][i]} {s}" for s in STATUSES if trend.counts[s][i]]
        title = f"{_bucket_label(trend, i)}: " + (", ".join(described) if described else "no runs")
        rects = []
        for status in STATUSES:
            n = trend.counts[status][i]
            if not n:
                continue
            h = plot_h * n / top
            y -= h
            rects.append(
                format_html(
                    '<rect class="lr-chart-bar lr-chart-{}" x="{}" y="{}" width="{}" height="{}"/>', status, _n(x), _n(y), _n(bar_w), _n(h)
                )
            )
        parts.append(format_html('<g class="lr-chart-slot"><title>{}</title>{}</g>', title, mark_safe("".join(rects))))  # noqa: S308
        if i % every == (count - 1) % every:
            parts.append(
                format_html(
                    '<text class="lr-chart-axis" x="{}" y="{}" text-anchor="middle">{}</text>',
                    _n(LEFT + slot * i + slot / 2),
                    HEIGHT - 4,
                    _bucket_label(trend, i),
                )
            )
    return format_html(
        '<svg class="lr-chart" viewBox="0 0 {} {}" role="img" aria-label="{}: {} runs">{}</svg>',
        WIDTH,
        HEIGHT,
        RANGE_LABELS[trend.span],
        trend.total,
        mark_safe("".join(parts)),  # noqa: S308 - each part was escaped by format_html
    )


def trend_panel(trend: Trend, *, switch_urls: dict[str, str]) -> SafeString:
    """The chart with its legend (totals per status) and links to switch between the two ranges."""
    switch = format_html_join(
        " ",
        '<a href="{}" class="lr-chart-range{}"{}>{}</a>',
        (
            (url, " lr-selected" if name == trend.span else "", mark_safe(' aria-current="true"') if name == trend.span else "", name)
            for name, url in switch_urls.items()
        ),
    )
    legend = format_html_join(
        " ",
        '<span class="lr-chart-key"><svg width="10" height="10"><rect class="lr-chart-{}" width="10" height="10"/></svg> {} {}</span>',
        ((status, sum(trend.counts[status]), status) for status in STATUSES),
    )
    return format_html(
        '<div class="lr-trend" data-range="{}"><div class="lr-trend-head"><strong>{}</strong> · {} run{} <span class="lr-trend-switch">{}</span>'
        '</div>{}<div class="lr-trend-legend">{}</div></div>',
        trend.span,
        RANGE_LABELS[trend.span],
        trend.total,
        "" if trend.total == 1 else "s",
        switch,
        trend_svg(trend),
        legend,
    )
