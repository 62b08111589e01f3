"""The Experiments area: the per-bucket and cumulative timeline of each arm against counts by
hand and `wilson`, the JSON route and the page, from events written by the gateway's own writer
into a temporary events dir; bad input names its field."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from scoring.console import create_app
from scoring.core.settings import ConsoleSettings, GatewaySettings, RegistrySettings, Settings
from scoring.gateway.event_writer import ServedEventWriter
from scoring.registry.experiments import arm_report, arm_timeline, wilson

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC).timestamp()  # a whole hour
HOUR = 3600.0


def write(directory: Path, kind: str, events: list[dict[str, Any]]) -> None:
    log = ServedEventWriter(directory, "test")
    for event in events:
        log.append(kind, event)  # type: ignore[call-overload]
    log.close()


def request(
    rid: str, at: float, arm: str, version: str, target: str = "item_ranker"
) -> dict[str, Any]:
    return {
        "request_id": rid,
        "at": at,
        "target": target,
        "arm": arm,
        "version": version,
        "user": f"user-{rid[-1]}",
        "candidates": 3,
        "returned": ["a", "b", "c"],
        "scores": [0.9, 0.5, 0.1],
        "latency_ms": 12.0,
        "degraded": False,
    }


def feedback(rid: str, candidate: str, kind: str = "click") -> dict[str, Any]:
    return {"request_id": rid, "candidate_id": candidate, "type": kind, "at": T0 + 5 * HOUR}


# Production v2: 10 requests in each of hours 0-3. Canary v3: 5 requests in hours 1 and 3 only.
CLICKS = {  # request id -> feedback events on returned candidates
    "p0-0": ["a"],
    "p0-1": ["a", "b"],  # two clicks, one clicked request
    "p1-0": ["c"],
    "p3-0": ["a"],
    "p3-1": ["b"],
    "p3-2": ["a"],
    "c1-0": ["a"],
    "c1-1": ["b"],
    "c3-0": ["c"],
}
PURCHASES = {"p3-0": "a", "c3-0": "c"}


@pytest.fixture
def events(tmp_path: Path) -> Path:
    directory = tmp_path / "events"
    requests = [
        request(f"p{h}-{i}", T0 + h * HOUR + i * 60, "production", "2")
        for h in range(4)
        for i in range(10)
    ]
    requests += [
        request(f"c{h}-{i}", T0 + h * HOUR + i * 60 + 30, "canary", "3")
        for h in (1, 3)
        for i in range(5)
    ]
    requests += [request("x0-0", T0, "production", "1", target="activity_ranker")]
    write(directory, "request", requests)
    fb = [feedback(rid, c) for rid, cands in CLICKS.items() for c in cands]
    fb += [feedback(rid, c, "purchase") for rid, c in PURCHASES.items()]
    fb.append(feedback("p0-0", "a"))  # logged twice: counts once
    fb.append(feedback("p2-0", "zzz"))  # not a returned candidate: ignored
    fb.append(feedback("unknown", "a"))  # no such request: ignored
    write(directory, "feedback", fb)
    write(
        directory,
        "shadow",
        [
            {
                "request_id": "p0-0",
                "at": T0,
                "target": "item_ranker",
                "version": "4",
                "primary_version": "2",
                "candidate_ids": ["a", "b"],
                "scores": [0.2, 0.1],
                "primary_scores": [0.9, 0.5],
                "latency_ms": 8.0,
            }
        ],
    )
    return directory


def test_timeline_counts_per_hour_and_cumulative(events: Path) -> None:
    timeline = arm_timeline(events, "item_ranker")
    assert timeline.bucket == "hour"  # a 3.x hour span
    prod, canary = timeline.arms
    assert (prod.arm, prod.version, canary.arm, canary.version) == (
        "production",
        "2",
        "canary",
        "3",
    )
    assert [p.start for p in prod.points] == [T0 + h * HOUR for h in range(4)]
    assert [p.end - p.start for p in prod.points] == [HOUR] * 4
    assert [p.window.requests for p in prod.points] == [10, 10, 10, 10]
    assert [p.window.clicked for p in prod.points] == [2, 1, 0, 3]
    assert [p.window.feedback_events for p in prod.points] == [3, 1, 0, 4]
    assert [p.window.purchased for p in prod.points] == [0, 0, 0, 1]
    assert [p.cumulative.requests for p in prod.points] == [10, 20, 30, 40]
    assert [p.cumulative.clicked for p in prod.points] == [2, 3, 3, 6]
    assert prod.points[0].window.ctr == pytest.approx(0.2)
    assert prod.points[0].window.ctr_ci == wilson(2, 10)
    assert prod.points[3].cumulative.ctr_ci == wilson(6, 40)
    assert prod.points[3].cumulative.conversion_ci == wilson(1, 40)
    # The canary's hours 1..3, the empty hour 2 included (no requests: no rate).
    assert [p.start for p in canary.points] == [T0 + h * HOUR for h in (1, 2, 3)]
    assert [p.window.requests for p in canary.points] == [5, 0, 5]
    assert [p.window.clicked for p in canary.points] == [2, 0, 1]
    assert math.isnan(canary.points[1].window.ctr)
    assert [p.cumulative.clicked for p in canary.points] == [2, 2, 3]
    assert canary.points[2].cumulative.conversion_ci == wilson(1, 10)


def test_last_cumulative_point_equals_the_arm_report(events: Path) -> None:
    report = {(s.arm, s.version): s for s in arm_report(events, "item_ranker")}
    for line in arm_timeline(events, "item_ranker").arms:
        last = line.points[-1].cumulative
        stats = report[(line.arm, line.version)]
        assert (last.requests, last.clicked, last.purchased, last.feedback_events) == (
            stats.requests,
            stats.clicked,
            stats.purchased,
            stats.feedback_events,
        )
    assert report[("production", "2")].feedback_events == 8
    assert report[("canary", "3")].feedback_events == 4


def test_daily_buckets_asked_for_or_chosen_for_a_long_span(events: Path, tmp_path: Path) -> None:
    daily = arm_timeline(events, "item_ranker", "day")
    assert daily.bucket == "day"
    prod = daily.arms[0]
    assert [p.start for p in prod.points] == [datetime(2026, 3, 1, tzinfo=UTC).timestamp()]
    assert (prod.points[0].window.requests, prod.points[0].window.clicked) == (40, 6)

    long = tmp_path / "long"
    write(long, "request", [request(f"r{d}", T0 + d * 86400, "production", "1") for d in range(5)])
    timeline = arm_timeline(long)
    assert timeline.bucket == "day"
    assert [p.window.requests for p in timeline.arms[0].points] == [1, 1, 1, 1, 1]
    assert arm_timeline(tmp_path / "nothing").arms == ()


def settings(tmp_path: Path, events: Path) -> Settings:
    return Settings(
        registry=RegistrySettings(url=f"sqlite:///{tmp_path}/r.db"),
        gateway=GatewaySettings(events_dir=events),
        console=ConsoleSettings(scrape_interval_s=3600.0),
    )


@pytest.fixture
def client(tmp_path: Path, events: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings(tmp_path, events))) as client:
        yield client


def test_json_route(client: TestClient, events: Path) -> None:
    response = client.get("/api/v1/experiments", params={"target": "item_ranker"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "NaN" not in response.text and "Infinity" not in response.text
    assert (body["target"], body["bucket"], body["bucket_seconds"]) == ("item_ranker", "hour", 3600)
    assert body["has_events"] and body["how_to"] is None
    (target,) = body["targets"]
    prod, canary = target["arms"]
    assert (prod["arm"], prod["requests"], prod["clicked"], prod["feedback_events"]) == (
        "production",
        40,
        6,
        8,
    )
    assert prod["ctr_p_value"] is None
    assert (canary["arm"], canary["version"], canary["requests"], canary["users"]) == (
        "canary",
        "3",
        10,
        5,
    )
    assert (canary["ctr_low"], canary["ctr_high"]) == pytest.approx(wilson(3, 10))
    assert (canary["conversion_low"], canary["conversion_high"]) == pytest.approx(wilson(1, 10))
    assert canary["ctr_p_value"] is not None and canary["p50_ms"] == 12.0
    points = target["timeline"][1]["points"]
    assert points[0]["start"].startswith("2026-03-01T11:00:00")
    assert points[1]["window"] == {
        "requests": 0,
        "feedback_events": 0,
        "clicked": 0,
        "purchased": 0,
        "ctr": None,
        "ctr_low": None,
        "ctr_high": None,
        "conversion": None,
        "conversion_low": None,
        "conversion_high": None,
    }
    assert points[2]["cumulative"]["ctr"] == pytest.approx(0.3)
    (shadow,) = target["shadows"]
    assert (shadow["version"], shadow["primary_version"], shadow["top1_agreement"]) == (
        "4",
        "2",
        1.0,
    )

    everything = client.get("/api/v1/experiments", params={"bucket": "day"}).json()
    assert [t["target"] for t in everything["targets"]] == ["activity_ranker", "item_ranker"]
    assert everything["bucket"] == "day"


def test_page_shows_the_arms_and_charts(client: TestClient) -> None:
    page = client.get("/experiments", params={"target": "item_ranker"})
    assert page.status_code == 200, page.text
    html = page.text
    assert 'id="target-item_ranker"' in html and 'id="target-activity_ranker"' not in html
    for text in ("production", "canary", "Feedback events", "p vs production", "Shadow versions"):
        assert text in html
    # The canary's CTR with its interval, as the table shows it.
    lo, hi = wilson(3, 10)
    assert f'0.300 <span class="muted">[{lo:.3f}, {hi:.3f}]</span>' in html
    svgs = html.count("<svg")
    assert svgs == 3
    start = html.index("<svg")
    ET.fromstring(html[start : html.index("</svg>", start) + len("</svg>")])
    assert "no-events" not in html
    per_bucket = client.get("/experiments", params={"cumulative": "false", "bucket": "hour"})
    assert per_bucket.status_code == 200
    assert "CTR (per hour, 95% interval)" in per_bucket.text


def test_no_events_says_how_to_get_some(tmp_path: Path) -> None:
    empty = tmp_path / "no-events"
    with TestClient(create_app(settings(tmp_path, empty))) as client:
        page = client.get("/experiments")
        assert page.status_code == 200
        assert 'id="no-events"' in page.text and "Feedback" in page.text
        assert "<svg" not in page.text
        body = client.get("/api/v1/experiments").json()
        assert body["has_events"] is False and body["targets"] == []
        assert "Feedback" in body["how_to"]


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"target": "nope"}, 404, "target"),
        ({"bucket": "week"}, 400, "bucket"),
        ({"target": "item_ranker", "bucket": "minute"}, 400, "bucket"),
    ],
)
def test_bad_input_names_the_field(
    client: TestClient, params: dict[str, str], status: int, field: str
) -> None:
    api = client.get("/api/v1/experiments", params=params)
    assert api.status_code == status
    assert api.json()["field"] == field and api.json()["error"].startswith(f"{field}:")
    page = client.get("/experiments", params=params)
    assert page.status_code == status
    assert f"{field}:" in page.text
    bad = client.get("/experiments", params={"cumulative": "maybe"})
    assert bad.status_code == 400 and "cumulative" in bad.text
