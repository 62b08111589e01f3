"""Charts for the console's pages: server-side SVG (no JavaScript, nothing from the internet),
scaled by its viewBox to the width of the page, with nice axis ticks, a legend, a fixed
colour-blind-safe palette and every text escaped.

A line chart draws each series' points joined in x order, and its band (e.g. a 95% confidence
interval) as a translucent polygon behind the line; with `x_is_time`, x are Unix seconds and
the axis is labelled in UTC. A bar chart draws grouped bars per category; a missing value
(None) draws no bar. A chart with nothing to draw says "no data".
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup, escape

__all__ = ["PALETTE", "Series", "bar_chart", "line_chart", "nice_ticks", "time_ticks"]

# Okabe & Ito (2008): distinguishable with the common colour-vision deficiencies. Yellow is left
# out (unreadable on white); dashes tell series apart where colours repeat.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000")
DASHES = ("", "6 3", "2 3", "8 3 2 3")
BAND_OPACITY = 0.18

WIDTH = 560
PLOT_HEIGHT = 220
LEFT, RIGHT, TOP = 64, 20, 36
AXIS_SPACE = 44  # below the plot: tick labels and the x label
LEGEND_ROW = 20
FONT = 14
CHAR_W = 7.9  # average glyph width at FONT, to lay out the legend and cut long labels


@dataclass(frozen=True)
class Series:
    """A named line: points (x, y), and an optional band (x, low, high), e.g. a 95% CI."""

    name: str
    points: list[tuple[float, float]]
    band: list[tuple[float, float, float]] | None = None


def _finite(*values: float | None) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _nice(value: float, round_: bool) -> float:
    """A 1, 2 or 5 times a power of ten near `value` (Heckbert, Graphics Gems, 1990)."""
    exp = math.floor(math.log10(value))
    frac = value / 10.0**exp
    if round_:
        nice = 1.0 if frac < 1.5 else 2.0 if frac < 3 else 5.0 if frac < 7 else 10.0
    else:
        nice = 1.0 if frac <= 1 else 2.0 if frac <= 2 else 5.0 if frac <= 5 else 10.0
    return nice * 10.0**exp


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [low, high] (the first <= low, the last >= high)."""
    if not _finite(low, high):
        return [0.0, 1.0]
    if high < low:
        low, high = high, low
    if high == low:
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    step = _nice(_nice(high - low, False) / max(count - 1, 1), True)
    start = math.floor(low / step) * step
    ticks = []
    i = 0
    while True:
        tick = start + i * step
        ticks.append(round(tick, 12) + 0.0)  # + 0.0: no "-0"
        if tick >= high - step * 1e-9:
            break
        i += 1
    return ticks


# Time steps an axis may use, in seconds, and how their ticks are labelled.
_TIME_STEPS = (
    60, 300, 600, 900, 1800, 3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600,
    86400, 2 * 86400, 7 * 86400, 14 * 86400, 30 * 86400, 91 * 86400, 365 * 86400,
)  # fmt: skip


def time_ticks(low: float, high: float, count: int = 6) -> list[tuple[float, str]]:
    """Ticks of a time axis from `low` to `high` (Unix seconds): whole minutes, hours or days in
    UTC, labelled `HH:MM` (with the date at the first tick and where the day changes) or the
    date."""
    if not _finite(low, high) or high <= low:
        return []
    span = high - low
    step = next((s for s in _TIME_STEPS if span / s <= count), _TIME_STEPS[-1])
    if span / step > count:  # longer than the steps go: whole multiples of a year
        step = math.ceil(span / count / _TIME_STEPS[-1]) * _TIME_STEPS[-1]
    start = math.ceil(low / step) * step
    ticks: list[tuple[float, str]] = []
    last_day = ""
    t = start
    while t <= high + 1e-6:
        when = datetime.fromtimestamp(t, UTC)
        day = when.strftime("%Y-%m-%d")
        if step >= 86400:
            label = day
        elif day != last_day:
            label = when.strftime("%m-%d %H:%M")
        else:
            label = when.strftime("%H:%M")
        last_day = day
        ticks.append((float(t), label))
        t += step
    return ticks


def _tick_label(value: float, step: float) -> str:
    if abs(value) >= 10_000:
        for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= div:
                text = f"{value / div:.3g}{unit}"
                return text
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    return f"{value:,.{decimals}f}"


def _fmt(y_format: str, value: float) -> str:
    try:
        return y_format.format(value)
    except (ValueError, IndexError, KeyError):
        return f"{value:g}"


def _e(text: object) -> str:
    """Text or attribute value, escaped for XML (quotes too)."""
    return str(escape(str(text)))


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: max(chars - 1, 1)] + "…"


def _legend(entries: Sequence[tuple[str, str, str, bool]], top: float) -> tuple[list[str], float]:
    """Legend items (name, colour, dash, as a bar swatch) in rows under the plot; the SVG parts
    and the height they take."""
    parts: list[str] = []
    x, y = float(LEFT), top
    for name, colour, dash, bar in entries:
        shown = _cut(name, 60)
        width = 26 + len(shown) * CHAR_W + 18
        if x + width > WIDTH - RIGHT and x > LEFT:
            x, y = float(LEFT), y + LEGEND_ROW
        if bar:
            swatch = f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="18" height="10" fill="{colour}"/>'
        else:
            dashes = f' stroke-dasharray="{dash}"' if dash else ""
            swatch = (
                f'<line x1="{x:.1f}" y1="{y - 4:.1f}" x2="{x + 18:.1f}" y2="{y - 4:.1f}" '
                f'stroke="{colour}" stroke-width="2.5"{dashes}/>'
            )
        parts.append(
            f'<g class="legend-item">{swatch}<text x="{x + 24:.1f}" y="{y:.1f}">'
            f"<title>{_e(name)}</title>{_e(shown)}</text></g>"
        )
        x += width
    return parts, (y - top + LEGEND_ROW) if entries else 0.0


def _svg(title: str, height: float, body: Iterable[str]) -> Markup:
    label = _e(title)
    return Markup(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {WIDTH} {height:.0f}" aria-label="{label}" font-size="{FONT}" '
        f'font-family="system-ui, -apple-system, Segoe UI, Roboto, Arial, sans-serif">'
        f"<title>{label}</title>"
        f'<text class="chart-title" x="{LEFT}" y="18" font-weight="600">{label}</text>'
        + "".join(body)
        + "</svg>"
    )


def _no_data(title: str) -> Markup:
    height = TOP + 90
    return _svg(
        title,
        height,
        [
            f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="70" '
            f'fill="#f3f4f6" stroke="#dde1e7"/>',
            f'<text class="no-data" x="{WIDTH / 2:.0f}" y="{TOP + 40}" text-anchor="middle" '
            f'fill="#5b6675">no data</text>',
        ],
    )


def _y_axis(ticks: list[float], y_of: _Scale, y_label: str) -> list[str]:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    parts = []
    for tick in ticks:
        y = y_of(tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" '
            f'stroke="#e5e8ee"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" fill="#5b6675">'
            f"{_e(_tick_label(tick, step))}</text>"
        )
    if y_label:
        mid = TOP + PLOT_HEIGHT / 2
        parts.append(
            f'<text class="y-label" x="14" y="{mid:.1f}" text-anchor="middle" '
            f'transform="rotate(-90 14 {mid:.1f})" fill="#5b6675">{_e(_cut(y_label, 40))}</text>'
        )
    return parts


class _Scale:
    """A linear map from a data domain onto a pixel range."""

    def __init__(self, d0: float, d1: float, p0: float, p1: float) -> None:
        self.d0, self.p0 = d0, p0
        self.k = (p1 - p0) / (d1 - d0) if d1 != d0 else 0.0

    def __call__(self, value: float) -> float:
        return self.p0 + (value - self.d0) * self.k


def _y_domain(values: list[float], zero: bool) -> list[float]:
    low, high = min(values), max(values)
    # Counts and rates read best from zero when zero is close to the data anyway.
    if zero or (low > 0 and (low < 0.3 * high or low == high)):
        low = min(low, 0.0)
        high = max(high, 0.0)
    return nice_ticks(low, high)


def line_chart(
    series: list[Series],
    *,
    title: str,
    y_label: str = "",
    x_is_time: bool = False,
    y_format: str = "{:.3f}",
) -> Markup:
    """Lines (with their bands) of `series`, as an SVG element for a page.

    Args:
        series: the lines; points and band rows with a missing or infinite value are left out.
        title: the chart's heading, <title> and aria-label.
        y_label: the y axis' label.
        x_is_time: x are Unix seconds, labelled as UTC dates and hours.
        y_format: how a point's value is written in its tooltip.

    Returns:
        The <svg> element (Markup: insert it into a template as it is).
    """
    # A series keeps its colour (by its place in `series`) when another one has nothing to draw,
    # so that the same arm has the same colour in every chart of a page.
    lines: list[
        tuple[int, Series, list[tuple[float, float]], list[tuple[float, float, float]]]
    ] = []
    for index, s in enumerate(series):
        points = sorted((float(x), float(y)) for x, y in s.points if _finite(x, y))
        band = sorted(
            (float(x), float(lo), float(hi)) for x, lo, hi in (s.band or []) if _finite(x, lo, hi)
        )
        if points or band:
            lines.append((index, s, points, band))
    if not lines:
        return _no_data(title)
    xs = [x for _, _, p, b in lines for x in [*(x for x, _ in p), *(x for x, _, _ in b)]]
    ys = [
        y
        for _, _, p, b in lines
        for y in [*(y for _, y in p), *(v for _, lo, hi in b for v in (lo, hi))]
    ]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        pad = 1800.0 if x_is_time else (abs(x0) * 0.1 or 1.0)
        x0, x1 = x0 - pad, x1 + pad
    y_ticks = _y_domain(ys, zero=False)
    x_of = _Scale(x0, x1, LEFT, WIDTH - RIGHT)
    y_of = _Scale(y_ticks[0], y_ticks[-1], TOP + PLOT_HEIGHT, TOP)
    bottom = TOP + PLOT_HEIGHT

    parts = _y_axis(y_ticks, y_of, y_label)
    if x_is_time:
        x_ticks = time_ticks(x0, x1, 4)
    else:
        nice = [t for t in nice_ticks(x0, x1, 6) if x0 - 1e-9 <= t <= x1 + 1e-9]
        step = nice[1] - nice[0] if len(nice) > 1 else 1.0
        x_ticks = [(t, _tick_label(t, step)) for t in nice]
    for tick, text in x_ticks:
        x = x_of(tick)
        # A label at either end of the axis stays inside the chart.
        half = len(text) * CHAR_W / 2
        anchor = "start" if x - half < 4 else "end" if x + half > WIDTH - 2 else "middle"
        parts.append(
            f'<line x1="{x:.1f}" y1="{bottom}" x2="{x:.1f}" y2="{bottom + 5}" stroke="#5b6675"/>'
            f'<text x="{x:.1f}" y="{bottom + 18}" text-anchor="{anchor}" fill="#5b6675">'
            f"{_e(text)}</text>"
        )
    parts.append(
        f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" stroke="#5b6675"/>'
    )
    if x_is_time:
        parts.append(
            f'<text class="x-label" x="{WIDTH - RIGHT}" y="{bottom + 36}" text-anchor="end" '
            f'fill="#5b6675">time (UTC)</text>'
        )

    entries: list[tuple[str, str, str, bool]] = []
    for i, s, points, band in lines:
        colour, dash = PALETTE[i % len(PALETTE)], DASHES[(i // len(PALETTE)) % len(DASHES)]
        name = _e(s.name)
        if len(band) >= 2:
            outline = [(x_of(x), y_of(hi)) for x, _, hi in band]
            outline += [(x_of(x), y_of(lo)) for x, lo, _ in reversed(band)]
            coords = " ".join(f"{x:.1f},{y:.1f}" for x, y in outline)
            parts.append(
                f'<polygon class="band" points="{coords}" fill="{colour}" '
                f'fill-opacity="{BAND_OPACITY}" stroke="none"><title>{name}: interval</title>'
                f"</polygon>"
            )
        elif band:  # one row: an error bar
            x, lo, hi = band[0]
            parts.append(
                f'<line class="band" x1="{x_of(x):.1f}" y1="{y_of(lo):.1f}" x2="{x_of(x):.1f}" '
                f'y2="{y_of(hi):.1f}" stroke="{colour}" stroke-opacity="0.5" stroke-width="6"/>'
            )
        if len(points) >= 2:
            coords = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in points)
            dashes = f' stroke-dasharray="{dash}"' if dash else ""
            parts.append(
                f'<polyline class="line" points="{coords}" fill="none" stroke="{colour}" '
                f'stroke-width="2"{dashes}><title>{name}</title></polyline>'
            )
        if len(points) <= 60:
            for x, y in points:
                when = _x_text(x, x_is_time)
                parts.append(
                    f'<circle cx="{x_of(x):.1f}" cy="{y_of(y):.1f}" r="3" fill="{colour}">'
                    f"<title>{name}: {_e(when)}: {_e(_fmt(y_format, y))}</title></circle>"
                )
        entries.append((s.name, colour, dash, False))
    if any(band for _, _, _, band in lines):
        entries.append(("shaded: interval", "#b7bfcc", "", True))
    legend, legend_height = _legend(entries, bottom + AXIS_SPACE + 12)
    parts += legend
    return _svg(title, bottom + AXIS_SPACE + legend_height + 8, parts)


def _x_text(x: float, x_is_time: bool) -> str:
    if x_is_time:
        return datetime.fromtimestamp(x, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{x:g}"


def bar_chart(
    categories: list[str],
    series: list[tuple[str, list[float | None]]],
    *,
    title: str,
    y_label: str = "",
    y_format: str = "{:.3f}",
) -> Markup:
    """Grouped bars: one group per category, one bar per series in each.

    Args:
        categories: the groups along x.
        series: (name, values), values in the order of `categories`; None (or a non-finite
            value) draws no bar there.
        title: the chart's heading, <title> and aria-label.
        y_label: the y axis' label.
        y_format: how a bar's value is written above it and in its tooltip.

    Returns:
        The <svg> element (Markup).
    """
    values = [
        float(v)
        for _, vs in series
        for v in vs[: len(categories)]
        if v is not None and math.isfinite(v)
    ]
    if not categories or not series or not values:
        return _no_data(title)
    y_ticks = _y_domain(values, zero=True)
    y_of = _Scale(y_ticks[0], y_ticks[-1], TOP + PLOT_HEIGHT, TOP)
    bottom = TOP + PLOT_HEIGHT
    parts = _y_axis(y_ticks, y_of, y_label)
    slot = (WIDTH - LEFT - RIGHT) / len(categories)
    bar_w = slot * 0.8 / len(series)
    zero_y = y_of(0.0)
    label_bars = len(categories) * len(series) <= 16
    for c, category in enumerate(categories):
        left = LEFT + c * slot + slot * 0.1
        for i, (name, vs) in enumerate(series):
            value = vs[c] if c < len(vs) else None
            if value is None or not math.isfinite(value):
                continue
            y = y_of(float(value))
            top, height = min(y, zero_y), abs(zero_y - y)
            colour = PALETTE[i % len(PALETTE)]
            text = _e(_fmt(y_format, float(value)))
            parts.append(
                f'<rect class="bar" x="{left + i * bar_w:.1f}" y="{top:.1f}" '
                f'width="{max(bar_w - 2, 1):.1f}" height="{max(height, 0.5):.1f}" '
                f'fill="{colour}"><title>{_e(name)} · {_e(category)}: {text}</title></rect>'
            )
            if label_bars:
                parts.append(
                    f'<text x="{left + (i + 0.5) * bar_w - 1:.1f}" y="{top - 4:.1f}" '
                    f'text-anchor="middle" font-size="{FONT - 2}">{text}</text>'
                )
        chars = max(int(slot / CHAR_W), 3)
        parts.append(
            f'<text x="{LEFT + (c + 0.5) * slot:.1f}" y="{bottom + 18}" text-anchor="middle" '
            f'fill="#5b6675"><title>{_e(category)}</title>{_e(_cut(category, chars))}</text>'
        )
    parts.append(
        f'<line x1="{LEFT}" y1="{zero_y:.1f}" x2="{WIDTH - RIGHT}" y2="{zero_y:.1f}" '
        f'stroke="#5b6675"/>'
    )
    entries = [(name, PALETTE[i % len(PALETTE)], "", True) for i, (name, _) in enumerate(series)]
    legend, legend_height = _legend(entries, bottom + AXIS_SPACE)
    parts += legend
    return _svg(title, bottom + AXIS_SPACE + legend_height + 4, parts)
