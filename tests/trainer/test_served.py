"""Served impressions as training rows: the served-feature log and Feedback events, written by the
gateway's own writers, joined by request and candidate within the attribution window."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from scoring.core.contract import FeatureContract, FeatureSpec
from scoring.core.served_events import FeedbackEvent, FeedbackType
from scoring.core.targets import TARGETS
from scoring.gateway.event_writer import ServedEventWriter
from scoring.gateway.feature_log import FeatureLog, ServedRequest
from scoring.trainer.served import Attribution, served_rows

TARGET = TARGETS["item_ranker"]
CONTRACT = FeatureContract.build(
    "item_ranker_v9",
    [
        FeatureSpec("user_behavior", "clicks_7d", "Float32", 0.0, "user"),
        FeatureSpec("item_stats", "price", "Float32", 10.0, "item"),
        FeatureSpec("item_embedding", "embedding", "Array(Float32)", 0.0, "item", length=3),
    ],
)
T0 = 1_700_000_000.0


def request(
    request_id: str, ids: list[str], schema: str = CONTRACT.schema_hash, degraded: bool = False
) -> ServedRequest:
    frame = {
        "user_behavior__clicks_7d": [1.0, None, 3.0][: len(ids)],
        "item_stats__price": [5.0, 7.5, None][: len(ids)],
        "item_embedding__embedding": [[0.1, 0.2, 0.3], None, [1.0, 2.0, 3.0]][: len(ids)],
    }
    matrix = CONTRACT.assemble(frame).matrix
    return ServedRequest(
        request_id=request_id,
        served_at=T0,
        user_id="u_1",
        target=TARGET.name,
        model_version="3",
        schema_hash=schema,
        candidate_ids=tuple(ids),
        features=matrix,
        scores=np.linspace(0.9, 0.1, len(ids), dtype=np.float32),
        ranks=np.array([1, 2, 0][: len(ids)], dtype=np.int32),  # the third was not returned
        degraded=degraded,
    )


def write(tmp_path: Path) -> tuple[Path, Path]:
    log_dir, events_dir = tmp_path / "served", tmp_path / "events"
    log = FeatureLog(log_dir)
    log.append(request("r1", ["i_a", "i_b", "i_c"]))
    log.append(request("r2", ["i_a", "i_b"]))
    log.append(request("old", ["i_a"], schema="another"))
    log.append(request("slow", ["i_a"], degraded=True))
    log.close()
    events = ServedEventWriter(events_dir, "gw-1")
    feedback: tuple[tuple[str, str, FeedbackType, float], ...] = (
        ("r1", "i_a", "click", 60.0),
        ("r1", "i_a", "click", 90.0),  # a retried Feedback: one click
        ("r1", "i_a", "purchase", 3600.0),
        ("r1", "i_b", "click", 2 * 3600.0),  # past the 30-minute window
        ("r2", "i_b", "click", 10.0),
        ("r1", "i_c", "click", 5.0),  # not returned, so not an impression
        ("nope", "i_a", "click", 5.0),  # an unknown request
    )
    for request_id, candidate, kind, delay in feedback:
        event: FeedbackEvent = {
            "request_id": request_id,
            "candidate_id": candidate,
            "type": kind,
            "at": T0 + delay,
        }
        events.append("feedback", event)
    events.close()
    return log_dir, events_dir


def test_labels_follow_the_feedback_within_the_window(tmp_path: Path) -> None:
    rows = served_rows(*write(tmp_path), TARGET, CONTRACT)
    frame = rows.frame.set_index(["request_id", TARGET.join_key])
    assert sorted(frame.index) == [("r1", "i_a"), ("r1", "i_b"), ("r2", "i_a"), ("r2", "i_b")]
    assert frame["clicked"].to_dict() == {
        ("r1", "i_a"): 1,
        ("r1", "i_b"): 0,
        ("r2", "i_a"): 0,
        ("r2", "i_b"): 1,
    }
    assert frame.loc[("r1", "i_a"), "purchased"] == 1
    assert frame["purchased"].sum() == 1
    assert (rows.other_schema, rows.degraded) == (1, 1)
    assert set(rows.frame["source"]) == {"served"}


def test_a_longer_window_counts_the_late_click(tmp_path: Path) -> None:
    rows = served_rows(*write(tmp_path), TARGET, CONTRACT, Attribution(click_s=3 * 3600))
    frame = rows.frame.set_index(["request_id", TARGET.join_key])
    assert frame.loc[("r1", "i_b"), "clicked"] == 1


def test_rows_reassemble_to_the_exact_served_input(tmp_path: Path) -> None:
    rows = served_rows(*write(tmp_path), TARGET, CONTRACT)
    served = request("r1", ["i_a", "i_b"]).features
    again = CONTRACT.assemble(rows.frame[rows.frame["request_id"] == "r1"]).matrix
    np.testing.assert_array_equal(again, served)
    # The missing values stay missing (their indicators set), not their defaults as values.
    assert np.isnan(rows.frame["user_behavior__clicks_7d"]).sum() == 2


def test_nothing_served_gives_no_rows(tmp_path: Path) -> None:
    rows = served_rows(tmp_path / "none", tmp_path / "events", TARGET, CONTRACT)
    assert rows.frame.empty and "clicked" in rows.frame.columns
