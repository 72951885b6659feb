"""The report as one self-contained HTML page: per-sensor charts, the data-quality counts, the table.

Everything is inline (CSS, and each chart as SVG drawn here), so the file opens from a disk, a
mail or an object store with no network at view time, and nothing is downloaded to make it.
A chart shows one metric of one sensor over time: the 5-minute averages as a line and the
minimum-maximum of each 5 minutes as a band around it.

Pure rendering from plain Python values (no Spark): report.py hands over the rows it already has.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape

from sensorstream.readings import METRICS, UNITS

WIDTH, HEIGHT = 360, 150
_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 52, 10, 10, 24
_COLOURS = {"temperature": "#d9534f", "humidity": "#337ab7", "pressure": "#5cb85c"}


@dataclass(frozen=True)
class Point:
    """One 5-minute window of one metric: its start, average, minimum and maximum."""

    start: datetime
    avg: float
    low: float
    high: float


def _utc(moment: datetime) -> datetime:
    """In UTC; a naive time (as pyspark hands timestamps over) is the local time it is."""
    return moment.astimezone(timezone.utc)


def _fmt(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}"


def chart(metric: str, points: list[Point]) -> str:
    """An SVG chart of one metric's 5-minute averages with their min-max band."""
    title = f"{metric} ({UNITS[metric]})"
    if not points:
        return (
            f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}: no data">'
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="empty">no readings</text></svg>'
        )
    points = sorted(points, key=lambda p: p.start)
    t0, t1 = _utc(points[0].start).timestamp(), _utc(points[-1].start).timestamp()
    low, high = min(p.low for p in points), max(p.high for p in points)
    if high == low:
        low, high = low - 1, high + 1
    margin = (high - low) * 0.05
    low, high = low - margin, high + margin
    inner_w, inner_h = WIDTH - _PAD_LEFT - _PAD_RIGHT, HEIGHT - _PAD_TOP - _PAD_BOTTOM

    def x(p: Point) -> float:
        span = t1 - t0
        return _PAD_LEFT + (inner_w * (_utc(p.start).timestamp() - t0) / span if span else inner_w / 2)

    def y(value: float) -> float:
        return _PAD_TOP + inner_h * (high - value) / (high - low)

    colour = _COLOURS.get(metric, "#555")
    band = [f"{x(p):.1f},{y(p.high):.1f}" for p in points] + [f"{x(p):.1f},{y(p.low):.1f}" for p in reversed(points)]
    line = " ".join(f"{x(p):.1f},{y(p.avg):.1f}" for p in points)
    dots = "".join(f'<circle cx="{x(p):.1f}" cy="{y(p.avg):.1f}" r="1.8" fill="{colour}"/>' for p in points)
    first, last = _utc(points[0].start), _utc(points[-1].start)
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}: 5-minute averages, band = min..max</title>"
        f'<rect x="{_PAD_LEFT}" y="{_PAD_TOP}" width="{inner_w}" height="{inner_h}" class="plot"/>'
        f'<polygon points="{" ".join(band)}" fill="{colour}" fill-opacity="0.22" stroke="none"/>'
        f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.6"/>{dots}'
        f'<text x="{_PAD_LEFT - 4}" y="{_PAD_TOP + 9}" text-anchor="end">{_fmt(high - margin)}</text>'
        f'<text x="{_PAD_LEFT - 4}" y="{_PAD_TOP + inner_h}" text-anchor="end">{_fmt(low + margin)}</text>'
        f'<text x="{_PAD_LEFT}" y="{HEIGHT - 6}">{first:%m-%d %H:%M}</text>'
        f'<text x="{WIDTH - _PAD_RIGHT}" y="{HEIGHT - 6}" text-anchor="end">{last:%m-%d %H:%M} UTC</text>'
        f'<text x="{_PAD_LEFT + 6}" y="{_PAD_TOP + 14}" class="label">{escape(title)}</text>'
        "</svg>"
    )


_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #222; background: #fff; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
.meta { color: #555; margin-top: 0; }
.quality { display: flex; gap: 12px; flex-wrap: wrap; }
.quality div { border: 1px solid #ccc; border-radius: 6px; padding: 8px 14px; background: #f7f7f7; }
.quality b { display: block; font-size: 1.4em; }
.sensor { display: flex; flex-wrap: wrap; gap: 8px; align-items: center; }
.sensor h3 { width: 100%; margin: 14px 0 2px; font-size: 1em; }
.chart { width: 360px; height: 150px; font-size: 10px; fill: #444; }
.chart .plot { fill: #fafafa; stroke: #ddd; } .chart .label { font-weight: 600; } .chart .empty { fill: #999; }
table { border-collapse: collapse; font-size: 12px; margin-top: 8px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; white-space: nowrap; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
"""


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, datetime):
        return f"{_utc(value):%Y-%m-%d %H:%M:%S}"
    return escape(str(value))


def render(
    columns: list[str], rows: list[tuple], quality: dict, series: dict[str, dict[str, list[Point]]], generated: datetime
) -> str:
    """The whole page. `series`: sensor id -> metric -> its 5-minute points; `rows`: the report table."""
    rejected = quality.get("rejected") or {}
    cards = [
        ("records read", quality.get("records", 0)),
        ("valid", quality.get("valid", 0)),
        ("rejected", sum(rejected.values())),
    ] + [(f"rejected: {k}", v) for k, v in sorted(rejected.items())]
    index = columns.index("sensor_id") if "sensor_id" in columns else 0
    sensors = [row[index] for row in rows] + sorted(set(series) - {row[index] for row in rows})
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>sensorstream report</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>sensorstream report</h1>",
        f'<p class="meta">topic {escape(str(quality.get("input_topic", "")))}; generated '
        f"{_utc(generated):%Y-%m-%d %H:%M:%S} UTC"
        + (f"; from {escape(str(quality['from']))}" if quality.get("from") else "")
        + (f"; to {escape(str(quality['to']))}" if quality.get("to") else "")
        + "</p>",
        "<h2>Data quality</h2>",
        '<div class="quality">' + "".join(f"<div>{escape(k)}<b>{v:,}</b></div>" for k, v in cards) + "</div>",
        "<h2>Per sensor: 5-minute averages, band = minimum to maximum</h2>",
    ]
    for sensor in sensors:
        charts = "".join(chart(m, (series.get(sensor) or {}).get(m, [])) for m in METRICS)
        parts.append(f'<section class="sensor"><h3>{escape(str(sensor))}</h3>{charts}</section>')
    parts.append("<h2>The table</h2>")
    parts.append("<table><thead><tr>" + "".join(f"<th>{escape(c)}</th>" for c in columns) + "</tr></thead><tbody>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>")
    parts.append("</tbody></table></body></html>")
    return "\n".join(parts) + "\n"
