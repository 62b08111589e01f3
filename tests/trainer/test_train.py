"""Training sets are point-in-time correct and time-split; versions carry their manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from scoring.core.contract import contract_from_store
from scoring.core.targets import TARGETS
from scoring.trainer.export import list_versions, read_manifest
from scoring.trainer.train import TrainConfig, labels_path, time_split, train_target, training_frame


def test_training_rows_never_see_future_feature_values(feature_repo_ready: Any) -> None:
    target = TARGETS["item_ranker"]
    store = feature_repo_ready.store()
    contract = contract_from_store(store, target.feature_service)
    frame = training_frame(store, target, contract, labels_path(feature_repo_ready.path, target))

    # Independent as-of join of the raw weekly snapshots: the value in force at event time.
    snapshots = feature_repo_ready.data.tables["user_behavior"].sort_values("event_timestamp")
    snapshots = snapshots.assign(
        event_timestamp=snapshots["event_timestamp"].astype("datetime64[ns, UTC]")
    )
    rows = frame[["user_id", "event_timestamp"]].reset_index()
    rows["event_timestamp"] = rows["event_timestamp"].astype("datetime64[ns, UTC]")
    expected = (
        pd.merge_asof(
            rows.sort_values("event_timestamp"),
            snapshots[["user_id", "event_timestamp", "ctr_30d"]],
            on="event_timestamp",
            by="user_id",
            direction="backward",
        )
        .set_index("index")
        .sort_index()
    )
    assert len(frame) == len(feature_repo_ready.data.tables["impressions_item"])
    pd.testing.assert_series_equal(
        frame["user_behavior__ctr_30d"].astype("float32"),
        expected["ctr_30d"].astype("float32"),
        check_names=False,
    )


def test_time_split_tests_on_the_latest_events(feature_repo_ready: Any) -> None:
    frame = feature_repo_ready.data.tables["impressions_item"]
    train, test = time_split(frame, 0.2)
    assert train["event_timestamp"].max() < test["event_timestamp"].min()
    assert abs(len(test) / len(frame) - 0.2) < 0.01


def test_trained_versions_have_manifest_and_learn(model_repository: Path) -> None:
    for target in TARGETS.values():
        model_dir = model_repository / target.name
        manifest = read_manifest(model_dir, list_versions(model_dir)[-1])
        assert manifest["contract"]["feature_service"] == target.feature_service
        assert manifest["parity_max_abs_diff"] <= 1e-5
        assert manifest["training"]["train_rows"] > manifest["training"]["test_rows"] > 0
        train_end, test_start = (
            manifest["training"]["train_window"][1],
            manifest["training"]["test_window"][0],
        )
        assert train_end < test_start
        metrics = manifest["metrics"]
        # The model must learn most of what the planted truth allows, even on small data.
        assert metrics["auc"] > 0.9 * metrics["oracle_auc"], metrics
        assert (model_dir / "config.pbtxt").exists() and (
            model_dir / "configs" / "cpu.pbtxt"
        ).exists()


def test_retraining_on_the_same_data_writes_no_new_version(
    feature_repo_ready: Any, tmp_path: Path
) -> None:
    target = TARGETS["activity_ranker"]
    store = feature_repo_ready.store()
    cfg = TrainConfig(epochs=1)
    first = train_target(store, target, feature_repo_ready.path, tmp_path, cfg)
    again = train_target(store, target, feature_repo_ready.path, tmp_path, cfg)
    assert (first.version, first.created) == (1, True)
    assert (again.version, again.created) == (1, False)
    changed = train_target(store, target, feature_repo_ready.path, tmp_path, TrainConfig(epochs=2))
    assert (changed.version, changed.created) == (2, True)
