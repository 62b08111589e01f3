"""`forget_user` on the files the platform writes: the served-feature log and event log (as the
gateway's writers write them) and the offline tables; only the user's rows go."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from scoring import workflows
from scoring.core.privacy import pseudonymizer
from scoring.core.served_events import read_events
from scoring.core.settings import (
    FeastSettings,
    GatewaySettings,
    PrivacySettings,
    Settings,
)
from scoring.gateway.event_writer import ServedEventWriter
from scoring.gateway.feature_log import FeatureLog, ServedLogPolicy, ServedRequest
from scoring.trainer.served import read_served

T0 = 1_700_000_000.0


def served(request_id: str, user_id: str) -> ServedRequest:
    return ServedRequest(
        request_id=request_id,
        served_at=T0,
        user_id=user_id,
        target="item_ranker",
        model_version="1",
        schema_hash="abc",
        candidate_ids=("i_1", "i_2"),
        features=np.ones((2, 4), dtype=np.float32),
        scores=np.array([0.9, 0.1], dtype=np.float32),
        ranks=np.array([1, 2], dtype=np.int32),
        degraded=False,
    )


def test_forget_removes_the_users_rows_everywhere_and_nothing_else(tmp_path: Path) -> None:
    settings = Settings(
        feast=FeastSettings(repo_path=tmp_path / "features"),
        gateway=GatewaySettings(
            feature_log_dir=tmp_path / "run" / "served", events_dir=tmp_path / "run" / "events"
        ),
        privacy=PrivacySettings(secret_file=tmp_path / "run" / "secret"),
    )
    gw, pseudonym = settings.gateway, pseudonymizer(settings.privacy)
    data = settings.feast.repo_path / "data"
    data.mkdir(parents=True)
    users = ["u_1", "u_2", "u_1", "u_3"]
    pd.DataFrame({"user_id": users, "item_id": ["i_1", "i_2", "i_3", "i_1"]}).to_parquet(
        data / "events.parquet"
    )
    pd.DataFrame(
        {"user_id": pd.Categorical(["u_1", "u_2", "u_3"]), "clicks_7d": [1.0, 2.0, 3.0]}
    ).to_parquet(data / "user_behavior.parquet")
    pd.DataFrame({"item_id": ["i_1"], "price": [1.0]}).to_parquet(data / "item_stats.parquet")

    policy = ServedLogPolicy(hashed=frozenset({"user_id"}), pseudonym=pseudonym)
    log = FeatureLog(gw.feature_log_dir, policy=policy)
    events = ServedEventWriter(gw.events_dir, "gw-1")
    for request_id, user in (("r1", "u_1"), ("r2", "u_2"), ("r3", "u_1")):
        log.append(served(request_id, user))
        events.append(
            "request",
            {
                "request_id": request_id,
                "at": T0,
                "target": "item_ranker",
                "arm": "production",
                "version": "1",
                "user": pseudonym(user),
                "candidates": 2,
                "returned": ["i_1", "i_2"],
                "scores": [0.9, 0.1],
                "latency_ms": 1.0,
                "degraded": False,
            },
        )
        events.append(
            "feedback",
            {"request_id": request_id, "candidate_id": "i_1", "type": "click", "at": T0 + 1},
        )
    log.close()
    events.close()

    report = workflows.forget_user(settings, "u_1", online=False)

    assert report.request_ids == 2
    removed = {(r.where, Path(r.path).name): r.rows for r in report.removed}
    assert removed == {
        ("events: request", "gw-1.jsonl"): 2,
        ("events: feedback", "gw-1.jsonl"): 2,
        ("served-feature log", next(iter(gw.feature_log_dir.rglob("*.parquet"))).name): 4,
        ("offline table", "events.parquet"): 2,
        ("offline table", "user_behavior.parquet"): 1,
    }
    assert [e["request_id"] for e in read_events(gw.events_dir, "request")] == ["r2"]
    assert [e["request_id"] for e in read_events(gw.events_dir, "feedback")] == ["r2"]
    left = read_served(gw.feature_log_dir, "item_ranker")
    assert set(left["request_id"]) == {"r2"}
    assert set(left["user_id"]) == {pseudonym("u_2")}
    assert pd.read_parquet(data / "events.parquet")["user_id"].tolist() == ["u_2", "u_3"]
    behavior = pd.read_parquet(data / "user_behavior.parquet")
    assert behavior["user_id"].astype(str).tolist() == ["u_2", "u_3"]
    assert behavior["clicks_7d"].tolist() == [2.0, 3.0]
    assert pq.read_table(data / "item_stats.parquet").num_rows == 1

    again = workflows.forget_user(settings, "u_1", online=False)
    assert again.removed == [] and again.request_ids == 0


def test_expire_logs_applies_each_logs_retention(tmp_path: Path) -> None:
    settings = Settings(
        gateway=GatewaySettings(feature_log_dir=tmp_path / "served", events_dir=tmp_path / "ev"),
        privacy=PrivacySettings(feature_log_retention_days=10, events_retention_days=0),
    )
    served_old = tmp_path / "served" / "target=item_ranker" / "date=2024-01-01"
    events_old = tmp_path / "ev" / "request" / "2024-01-01"
    for folder in (served_old, events_old):
        folder.mkdir(parents=True)
    today = datetime(2024, 3, 1, tzinfo=UTC)
    assert workflows.expire_logs(settings, today) == [served_old]
    assert events_old.exists(), "0 days: the event log is kept"
