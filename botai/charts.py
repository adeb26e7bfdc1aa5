"""Small SVG charts rendered on the server, so the dashboard needs no JavaScript library and no
internet. Every label is escaped; numbers are formatted here, never taken as markup."""

from collections.abc import Sequence
from datetime import datetime

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

FONT = 'font-family="sans-serif" font-size="11" fill="currentColor"'
GRID = 'stroke="currentColor" stroke-opacity="0.15"'


def _number(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _svg(*, label: str, width: int, height: int, body: list[str]) -> SafeString:
    return mark_safe(  # noqa: S308 - built from escaped labels and formatted numbers only
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{escape(label)}" '
        f'viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px">'
        f"<title>{escape(label)}</title>{''.join(body)}</svg>"
    )


def empty(*, label: str, message: str, width: int = 480, height: int = 60) -> SafeString:
    text = f'<text x="8" y="{height // 2}" {FONT}>{escape(message)}</text>'
    return _svg(label=label, width=width, height=height, body=[text])


def horizontal_bars(
    *, label: str, bars: Sequence[tuple[str, float]], unit: str, width: int = 480
) -> SafeString:
    """One bar per (name, value), longest = full width; e.g. seconds per cycle stage."""
    if not bars:
        return empty(label=label, message="no data", width=width)
    row, left, right = 22, 110, 70
    height = row * len(bars) + 8
    top = max(value for _, value in bars) or 1.0
    body = []
    for index, (name, value) in enumerate(bars):
        y = 4 + index * row
        length = (width - left - right) * max(value, 0) / top
        body.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" {FONT}>{escape(name)}</text>'
            f'<rect x="{left}" y="{y + 3}" width="{length:.1f}" height="{row - 8}" '
            f'fill="#417690"></rect>'
            f'<text x="{left + length + 4:.1f}" y="{y + 14}" {FONT}>'
            f"{_number(value)} {escape(unit)}</text>"
        )
    return _svg(label=label, width=width, height=height, body=body)


def stacked_columns(
    *,
    label: str,
    columns: Sequence[tuple[str, dict[str, int]]],
    series: dict[str, str],
    width: int = 720,
    height: int = 200,
) -> SafeString:
    """Columns of stacked counts, e.g. signals per hour by type. `series`: name -> colour."""
    total = max((sum(counts.values()) for _, counts in columns), default=0)
    if not total:
        return empty(label=label, message="nothing in this period", width=width)
    left, bottom, legend = 36, 22, 18
    plot_height = height - bottom - legend
    step = (width - left) / len(columns)
    body = [
        f'<line x1="{left}" y1="{legend}" x2="{width}" y2="{legend}" {GRID}></line>',
        f'<text x="{left - 4}" y="{legend + 4}" text-anchor="end" {FONT}>{total}</text>',
        f'<text x="{left - 4}" y="{legend + plot_height}" text-anchor="end" {FONT}>0</text>',
    ]
    for index, (name, colour) in enumerate(series.items()):
        x = left + index * 90
        body.append(
            f'<rect x="{x}" y="2" width="10" height="10" fill="{escape(colour)}"></rect>'
            f'<text x="{x + 14}" y="11" {FONT}>{escape(name)}</text>'
        )
    label_every = max(1, len(columns) // 8)
    for index, (column, counts) in enumerate(columns):
        x = left + index * step
        y = legend + plot_height
        for name, colour in series.items():
            bar = plot_height * counts.get(name, 0) / total
            if bar:
                y -= bar
                body.append(
                    f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" '
                    f'height="{bar:.1f}" fill="{escape(colour)}">'
                    f"<title>{escape(column)} {escape(name)}: {counts[name]}</title></rect>"
                )
        if index % label_every == 0:
            body.append(
                f'<text x="{x + step / 2:.1f}" y="{height - 6}" text-anchor="middle" {FONT}>'
                f"{escape(column)}</text>"
            )
    return _svg(label=label, width=width, height=height, body=body)


def line(
    *,
    label: str,
    points: Sequence[tuple[datetime, float]],
    unit: str,
    width: int = 480,
    height: int = 160,
) -> SafeString:
    """A time series, e.g. a trader's equity: the line, its min and max, first and last time."""
    if len(points) < 2:
        return empty(label=label, message="not enough points yet", width=width)
    left, right, top_pad, bottom = 64, 8, 10, 20
    times = [time.timestamp() for time, _ in points]
    values = [value for _, value in points]
    low, high = min(values), max(values)
    span_v = (high - low) or abs(high) or 1.0
    span_t = (times[-1] - times[0]) or 1.0
    plot_w, plot_h = width - left - right, height - top_pad - bottom

    def xy(t: float, v: float) -> str:
        x = left + plot_w * (t - times[0]) / span_t
        y = top_pad + plot_h * (high - v) / span_v
        return f"{x:.1f},{y:.1f}"

    path = " ".join(xy(t, v) for t, v in zip(times, values, strict=True))
    body = [
        f'<line x1="{left}" y1="{top_pad}" x2="{width - right}" y2="{top_pad}" {GRID}></line>',
        f'<line x1="{left}" y1="{top_pad + plot_h}" x2="{width - right}" '
        f'y2="{top_pad + plot_h}" {GRID}></line>',
        f'<text x="{left - 4}" y="{top_pad + 4}" text-anchor="end" {FONT}>{_number(high)}</text>',
        f'<text x="{left - 4}" y="{top_pad + plot_h}" text-anchor="end" {FONT}>'
        f"{_number(low)}</text>",
        f'<polyline points="{path}" fill="none" stroke="#417690" stroke-width="1.5"></polyline>',
        f'<text x="{left}" y="{height - 4}" {FONT}>{points[0][0]:%m-%d %H:%M}</text>',
        f'<text x="{width - right}" y="{height - 4}" text-anchor="end" {FONT}>'
        f"{points[-1][0]:%m-%d %H:%M} · {_number(values[-1])} {escape(unit)}</text>",
    ]
    return _svg(label=label, width=width, height=height, body=body)
