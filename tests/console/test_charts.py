"""The console's SVG charts: well-formed XML, every text escaped, nice ticks, UTC time axes,
bands, missing bars and empty data."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from markupsafe import Markup

from scoring.console.charts import PALETTE, Series, bar_chart, line_chart, nice_ticks, time_ticks

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 3, 1, 22, 0, tzinfo=UTC).timestamp()


def parse(chart: Markup) -> ET.Element:
    assert isinstance(chart, Markup)
    root = ET.fromstring(str(chart))
    assert root.tag == f"{SVG}svg"
    assert root.get("class") == "chart" and root.get("role") == "img"
    assert root.get("viewBox", "").startswith("0 0 ")
    assert root.get("width") is None  # scaled by the page, not a fixed size
    return root


def texts(root: ET.Element) -> list[str]:
    """The visible texts (a <title> in a <text> is its tooltip)."""
    return [(t.text or "") + "".join(c.tail or "" for c in t) for t in root.iter(f"{SVG}text")]


def test_line_chart_is_valid_svg_with_title_legend_and_band() -> None:
    hours = [T0 + h * 3600 for h in range(6)]
    chart = line_chart(
        [
            Series(
                "production 3",
                [(x, 0.1 + 0.01 * i) for i, x in enumerate(hours)],
                [(x, 0.05, 0.2) for x in hours],
            ),  # fmt: skip
            Series("canary 4", [(x, 0.12) for x in hours]),
        ],
        title="CTR by hour",
        y_label="CTR",
        x_is_time=True,
    )
    root = parse(chart)
    assert root.get("aria-label") == "CTR by hour"
    assert root.find(f"{SVG}title") is not None
    assert root.find(f"{SVG}title").text == "CTR by hour"  # type: ignore[union-attr]
    (band,) = root.iter(f"{SVG}polygon")
    assert float(band.get("fill-opacity", "1")) < 0.5  # translucent
    assert band.get("fill") == PALETTE[0]
    # The band's outline: the highs forward, the lows back.
    assert len(band.get("points", "").split()) == 2 * len(hours)
    lines = list(root.iter(f"{SVG}polyline"))
    assert [line.get("stroke") for line in lines] == [PALETTE[0], PALETTE[1]]
    labels = texts(root)
    assert "production 3" in labels and "canary 4" in labels and "CTR" in labels
    # UTC: 22:00 on 03-01, the day change labelled with its date.
    assert "03-01 22:00" in labels
    assert "03-02 00:00" in labels
    assert "time (UTC)" in labels


def test_every_text_is_escaped() -> None:
    evil = "<script>alert(\"x\")</script> & 'quoted'"
    chart = line_chart([Series(evil, [(0.0, 1.0), (1.0, 2.0)])], title=evil, y_label=evil)
    root = parse(chart)
    assert "<script>" not in str(chart)
    assert root.get("aria-label") == evil
    assert evil in texts(root)
    bars = bar_chart([evil], [(evil, [1.0])], title=evil, y_label=evil)
    root = parse(bars)
    assert "<script>" not in str(bars)
    assert evil in ["".join(t.itertext()) for t in root.iter(f"{SVG}title")]


def test_empty_data_says_no_data() -> None:
    for chart in (
        line_chart([], title="nothing"),
        line_chart([Series("a", []), Series("b", [(1.0, math.nan)])], title="nothing"),
        bar_chart([], [], title="nothing"),
        bar_chart(["a", "b"], [("s", [None, None])], title="nothing"),
        bar_chart(["a"], [("s", [math.inf])], title="nothing"),
    ):
        root = parse(chart)
        assert "no data" in texts(root)
        assert root.get("aria-label") == "nothing"


def test_missing_and_non_finite_points_are_left_out() -> None:
    chart = line_chart(
        [Series("a", [(0.0, 1.0), (1.0, math.nan), (2.0, 3.0)], [(0.0, 0.5, math.inf)])],
        title="t",
    )
    root = parse(chart)
    assert "nan" not in str(chart).lower().replace("no data", "")
    assert len(root.findall(f".//{SVG}circle")) == 2
    assert not list(root.iter(f"{SVG}polygon"))  # the only band row was not finite


def test_single_point_and_single_band_row() -> None:
    root = parse(
        line_chart([Series("a", [(T0, 0.2)], [(T0, 0.1, 0.3)])], title="t", x_is_time=True)
    )
    assert len(root.findall(f".//{SVG}circle")) == 1
    assert [e.get("class") for e in root.iter(f"{SVG}line") if e.get("class") == "band"] == ["band"]


def test_bar_chart_groups_and_skips_none() -> None:
    chart = bar_chart(
        ["auc", "ndcg@10", "hit@10"],
        [("v1", [0.71, None, 0.4]), ("v2", [0.74, 0.5, None])],
        title="metrics",
        y_format="{:.2f}",
    )
    root = parse(chart)
    bars = [r for r in root.iter(f"{SVG}rect") if r.get("class") == "bar"]
    assert len(bars) == 4  # two None: no bar
    assert {b.get("fill") for b in bars} == {PALETTE[0], PALETTE[1]}
    labels = texts(root)
    assert {"auc", "ndcg@10", "hit@10", "v1", "v2", "0.74"} <= set(labels)
    # Taller value, taller bar; every bar starts at zero.
    heights = {b.findtext(f"{SVG}title"): float(b.get("height", "0")) for b in bars}
    assert heights["v2 · auc: 0.74"] > heights["v1 · auc: 0.71"] > heights["v1 · hit@10: 0.40"]


def test_bar_chart_with_negative_values() -> None:
    root = parse(bar_chart(["a", "b"], [("delta", [-0.2, 0.3])], title="t"))
    labels = texts(root)
    assert "-0.2" in labels or "-0.20" in labels
    assert any(label in ("0.0", "0.00", "0") for label in labels)


def test_nice_ticks() -> None:
    assert nice_ticks(0, 0.137) == [0.0, 0.05, 0.1, 0.15]
    assert nice_ticks(0, 100) == [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
    assert nice_ticks(0.021, 0.031) == [0.02, 0.022, 0.024, 0.026, 0.028, 0.03, 0.032]
    ticks = nice_ticks(-5, 17)
    assert ticks[0] <= -5 and ticks[-1] >= 17 and 0.0 in ticks
    flat = nice_ticks(3, 3)
    assert flat[0] < 3 < flat[-1]
    assert nice_ticks(math.nan, 1) == [0.0, 1.0]


def test_time_ticks_are_whole_utc_hours_or_days() -> None:
    ticks = time_ticks(T0 + 600, T0 + 30 * 3600)
    assert 3 <= len(ticks) <= 7
    for at, _ in ticks:
        when = datetime.fromtimestamp(at, UTC)
        assert when.minute == 0 and when.hour % 6 == 0
    days = time_ticks(T0, T0 + 5 * 86400)
    assert all(label.count("-") == 2 for _, label in days)  # YYYY-MM-DD
    assert all(datetime.fromtimestamp(at, UTC).hour == 0 for at, _ in days)
    assert time_ticks(T0, T0) == []


def test_a_series_keeps_its_colour_when_another_has_no_points() -> None:
    root = parse(
        line_chart([Series("empty", []), Series("b", [(0.0, 1.0), (1.0, 2.0)])], title="t")
    )
    (line,) = root.iter(f"{SVG}polyline")
    assert line.get("stroke") == PALETTE[1]
