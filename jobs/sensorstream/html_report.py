"""The report as one self-contained HTML page: per-sensor charts, the data-quality counts, the table.

Everything is inline (CSS, and each chart as SVG drawn here), so the file opens from a disk, a
mail or an object store with no network at view time, and nothing is downloaded to make it.
A chart shows one metric of one sensor over time: the 5-minute averages as a line and the
minimum-maximum of each 5 minutes as a band around it. The sensor's alerts (the stream's detector,
STREAM_DETECT=on) are marked on it at their event time: a spike on its metric's chart at its value,
a stuck sensor (all its values repeated) on each chart at the top edge, and a silence as a grey band
on each chart from the sensor's last reading (silent) to its next (back). Each mark has a tooltip
(an SVG <title>): the kind, the value, the expected range, the time.

Pure rendering from plain Python values (no Spark): report.py hands over the rows it already has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from html import escape

from sensorstream.readings import ALERT_KINDS, METRICS, UNITS

WIDTH, HEIGHT = 360, 150
_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 52, 10, 10, 24
_COLOURS = {"temperature": "#d9534f", "humidity": "#337ab7", "pressure": "#5cb85c"}
#: Alerts about a span of time, drawn on every chart of the sensor: silent opens it, back closes it.
_SPAN_KINDS = ("silent", "back")


@dataclass(frozen=True)
class Point:
    """One 5-minute window of one metric: its start, average, minimum and maximum."""

    start: datetime
    avg: float
    low: float
    high: float


@dataclass(frozen=True)
class Alert:
    """One of the detector's alerts (`schema.ALERT_SCHEMA`): what the charts mark."""

    kind: str
    metric: str | None
    value: float | None
    expected_low: float | None
    expected_high: float | None
    event_time: datetime


def _utc(moment: datetime) -> datetime:
    """In UTC; a naive time (as pyspark hands timestamps over) is the local time it is."""
    return moment.astimezone(timezone.utc)


def _fmt(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.2f}"


def _at(moment: datetime) -> str:
    return f"{_utc(moment):%Y-%m-%d %H:%M:%S} UTC"


def _describe(alert: Alert) -> str:
    """An alert in words, as its mark's tooltip says it."""
    if alert.kind == "silent":
        return f"silent: no reading after {_at(alert.event_time)}"
    if alert.kind == "back":
        return f"back: a reading again at {_at(alert.event_time)}"
    what = alert.kind
    # a stuck alert names no metric: its value is the repeated reading's first one
    metric = alert.metric or (METRICS[0] if alert.kind == "stuck" else None)
    if alert.value is not None and metric in UNITS:
        unit = UNITS[metric]
        value = f"{metric} {_fmt(alert.value)} {unit}"
        what += f": {value}" if alert.metric else f": the same readings repeated ({value}, ...)"
        if alert.expected_low is not None and alert.expected_high is not None:
            what += f", expected {_fmt(alert.expected_low)} to {_fmt(alert.expected_high)} {unit}"
    return f"{what}, at {_at(alert.event_time)}"


class _Scale:
    """Time (Unix seconds) -> x across the plot; `domain` is (first, last)."""

    def __init__(self, first: float, last: float, left: float, width: float):
        self.domain = (first, last)
        self.left, self.width = left, width

    def __call__(self, t: float) -> float:
        first, last = self.domain
        return self.left + (self.width * (t - first) / (last - first) if last > first else self.width / 2)


def _silences(alerts: Sequence[Alert], t0: float, t1: float) -> list[tuple[float, float, str]]:
    """(from, to, tooltip) of each silence: a silent alert to the next back, or to the chart's edge
    when the other end is outside the report's period."""
    spans, opened = [], None
    for alert in sorted((a for a in alerts if a.kind in _SPAN_KINDS), key=lambda a: _utc(a.event_time)):
        if alert.kind == "silent" and opened is None:
            opened = alert
        elif alert.kind == "back":
            start = _utc(opened.event_time).timestamp() if opened else t0
            said = f"{_describe(opened)}; " if opened else "silent before this period; "
            spans.append((start, _utc(alert.event_time).timestamp(), said + _describe(alert)))
            opened = None
    if opened is not None:
        spans.append((_utc(opened.event_time).timestamp(), t1, _describe(opened) + "; not back in this period"))
    return spans


def _marks(
    alerts: Sequence[Alert], metric: str, x: _Scale, y: Callable[[float], float], top: float, bottom: float
) -> tuple[str, str]:
    """The SVG of this chart's `alerts` (its metric's and those of none): (behind the data: the
    silences, over it: the other marks)."""
    inner_h = bottom - top
    behind = []
    for start, end, said in _silences(alerts, *x.domain):
        left, right = x(start), x(end)
        behind.append(
            f'<g class="alert silent"><title>{escape(said)}</title>'
            f'<rect x="{left:.1f}" y="{top}" width="{max(right - left, 1.5):.1f}" height="{inner_h}"/>'
            f'<line x1="{left:.1f}" y1="{top}" x2="{left:.1f}" y2="{bottom}"/>'
            f'<line x1="{right:.1f}" y1="{top}" x2="{right:.1f}" y2="{bottom}"/></g>'
        )
    over = []
    for alert in alerts:
        if alert.kind in _SPAN_KINDS:
            continue
        cx = x(_utc(alert.event_time).timestamp())
        if alert.metric == metric and alert.value is not None:  # at its value (a diamond)
            cy = min(max(y(alert.value), top), bottom)
            shape = f"M{cx:.1f},{cy - 5:.1f} l5,5 l-5,5 l-5,-5 Z"
        else:  # no value on this chart: at the top edge (a triangle pointing down)
            shape = f"M{cx - 5:.1f},{top:.1f} h10 l-5,8 Z"
        over.append(
            f'<g class="alert {escape(alert.kind)}"><title>{escape(_describe(alert))}</title><path d="{shape}"/></g>'
        )
    return "".join(behind), "".join(over)


def chart(metric: str, points: list[Point], alerts: Sequence[Alert] = ()) -> str:
    """An SVG chart of one metric's 5-minute averages with their min-max band, and the sensor's
    `alerts` marked on it (those of another metric left out)."""
    title = f"{metric} ({UNITS[metric]})"
    if not points:
        return (
            f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}: no data">'
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle" class="empty">no readings</text></svg>'
        )
    points = sorted(points, key=lambda p: p.start)
    alerts = [a for a in alerts if a.kind in _SPAN_KINDS or a.metric in (None, metric)]
    times = [_utc(p.start).timestamp() for p in points] + [_utc(a.event_time).timestamp() for a in alerts]
    t0, t1 = min(times), max(times)
    # the value axis reaches every value marked on it, as the time axis reaches every mark
    values = [p.low for p in points] + [p.high for p in points]
    values += [a.value for a in alerts if a.metric == metric and a.value is not None]
    low, high = min(values), max(values)
    if high == low:
        low, high = low - 1, high + 1
    margin = (high - low) * 0.05
    low, high = low - margin, high + margin
    inner_w, inner_h = WIDTH - _PAD_LEFT - _PAD_RIGHT, HEIGHT - _PAD_TOP - _PAD_BOTTOM

    at = _Scale(t0, t1, _PAD_LEFT, inner_w)

    def x(p: Point) -> float:
        return at(_utc(p.start).timestamp())

    def y(value: float) -> float:
        return _PAD_TOP + inner_h * (high - value) / (high - low)

    colour = _COLOURS.get(metric, "#555")
    band = [f"{x(p):.1f},{y(p.high):.1f}" for p in points] + [f"{x(p):.1f},{y(p.low):.1f}" for p in reversed(points)]
    line = " ".join(f"{x(p):.1f},{y(p.avg):.1f}" for p in points)
    dots = "".join(f'<circle cx="{x(p):.1f}" cy="{y(p.avg):.1f}" r="1.8" fill="{colour}"/>' for p in points)
    behind, over = _marks(alerts, metric, at, y, _PAD_TOP, _PAD_TOP + inner_h)
    first, last = datetime.fromtimestamp(t0, timezone.utc), datetime.fromtimestamp(t1, timezone.utc)
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}: 5-minute averages, band = min..max</title>"
        f'<rect x="{_PAD_LEFT}" y="{_PAD_TOP}" width="{inner_w}" height="{inner_h}" class="plot"/>{behind}'
        f'<polygon points="{" ".join(band)}" fill="{colour}" fill-opacity="0.22" stroke="none"/>'
        f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="1.6"/>{dots}{over}'
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
.chart .alert path { stroke: #fff; stroke-width: 1; } .chart .spike path { fill: #111; }
.chart .stuck path { fill: #8e44ad; } .chart .silent rect { fill: #777; fill-opacity: 0.18; }
.chart .silent line { stroke: #555; stroke-width: 1; stroke-dasharray: 3 2; }
.sensor h3 .alerts { font-weight: normal; color: #8e44ad; }
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


#: What the marks on the charts are, said once above them when there are any.
_LEGEND = (
    "Alerts of the stream's detector, hover a mark for its details: &#9670; spike (at its value, on its "
    "metric's chart), &#9660; stuck (the same readings repeated), grey band: silent, from the sensor's last "
    "reading to its next (back)."
)


def render(
    columns: list[str],
    rows: list[tuple],
    quality: dict,
    series: dict[str, dict[str, list[Point]]],
    generated: datetime,
    alerts: dict[str, list[Alert]] | None = None,
) -> str:
    """The whole page. `series`: sensor id -> metric -> its 5-minute points; `rows`: the report table;
    `alerts`: sensor id -> its alerts, marked on its charts."""
    alerts = alerts or {}
    rejected = quality.get("rejected") or {}
    raised = quality.get("alerts") or {}
    cards = (
        [
            ("records read", quality.get("records", 0)),
            ("valid", quality.get("valid", 0)),
            ("rejected", sum(rejected.values())),
        ]
        + [(f"rejected: {k}", v) for k, v in sorted(rejected.items())]
        + ([("alerts", sum(raised.values()))] if quality.get("alerts_topic") else [])
        + [(f"alerts: {k}", v) for k, v in raised.items() if v]
    )
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
        + (
            f"; alerts from {escape(str(quality['alerts_topic']))}"
            if quality.get("alerts_topic")
            else ("; no alerts topic" if "alerts_topic" in quality else "")
        )
        + "</p>",
        "<h2>Data quality</h2>",
        '<div class="quality">' + "".join(f"<div>{escape(k)}<b>{v:,}</b></div>" for k, v in cards) + "</div>",
        "<h2>Per sensor: 5-minute averages, band = minimum to maximum</h2>",
    ]
    if any(alerts.values()):
        parts.append(f'<p class="meta">{_LEGEND}</p>')
    for sensor in sensors:
        marked = alerts.get(sensor, [])
        charts = "".join(chart(m, (series.get(sensor) or {}).get(m, []), marked) for m in METRICS)
        said = ", ".join(f"{k} {n}" for k in ALERT_KINDS if (n := sum(a.kind == k for a in marked)))
        heading = escape(str(sensor)) + (f' <span class="alerts">alerts: {escape(said)}</span>' if said else "")
        parts.append(f'<section class="sensor"><h3>{heading}</h3>{charts}</section>')
    parts.append("<h2>The table</h2>")
    parts.append("<table><thead><tr>" + "".join(f"<th>{escape(c)}</th>" for c in columns) + "</tr></thead><tbody>")
    for row in rows:
        parts.append("<tr>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>")
    parts.append("</tbody></table></body></html>")
    return "\n".join(parts) + "\n"
