"""Training sets are point-in-time correct and time-split; versions carry a full manifest."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from scoring.core.contract import contract_from_store
from scoring.core.targets import TARGETS
from scoring.trainer.evaluate import METRICS
from scoring.trainer.export import MODEL_FILE, list_versions, read_manifest
from scoring.trainer.layout import feature_groups
from scoring.trainer.train import (
    TrainConfig,
    labels_path,
    time_split,
    train_target,
    training_frame,
)

from ..as_of import as_of

# The targets the shared small data set gives enough rows to learn in a few epochs. It has
# about 175 baskets of 2+ items (about 1,300 basket_completer rows) and 2,000 bundle
# impressions: at batch 512, six epochs are some 15 optimizer steps. Their quality is measured
# on the default data and the real logs (tests/trainer/test_basket_training.py runs the path).
SIZED_FOR_QUALITY = ("item_ranker", "activity_ranker")


@pytest.mark.parametrize(
    ("table", "key", "column"),
    [("user_behavior", "user_id", "ctr_30d"), ("item_stats", "item_id", "ctr_7d")],
)
def test_training_rows_never_see_future_feature_values(
    feature_repo_ready: Any, table: str, key: str, column: str
) -> None:
    target = TARGETS["item_ranker"]
    store = feature_repo_ready.store()
    contract = contract_from_store(store, target.feature_service)
    frame = training_frame(store, target, contract, labels_path(feature_repo_ready.path, target))
    assert len(frame) == len(feature_repo_ready.data.tables["impressions_item"])
    ttl = pd.Timedelta(store.get_feature_view(table).ttl)
    expected = as_of(frame, feature_repo_ready.data.tables[table], key, column, ttl)
    pd.testing.assert_series_equal(
        frame[f"{table}__{column}"].astype("float32"),
        expected.astype("float32"),
        check_names=False,
    )


def test_training_set_has_the_services_features_and_serving_defaults(
    feature_repo_ready: Any, tmp_path: Path
) -> None:
    target = TARGETS["item_ranker"]
    store = feature_repo_ready.store()
    contract = contract_from_store(store, target.feature_service)
    known = feature_repo_ready.data.tables["impressions_item"].iloc[[500]].copy()
    unknown = known.assign(user_id="user_never_seen", item_id="item_never_seen")
    year = pd.Timedelta(days=400)
    early = known.assign(
        event_timestamp=known["event_timestamp"] - year,
        request_ts=known["request_ts"] - int(year.total_seconds()),
    )
    labels = tmp_path / "impressions.parquet"
    pd.concat([known, unknown, early], ignore_index=True).to_parquet(labels)

    frame = training_frame(store, target, contract, labels)
    assert len(frame) == 3
    assert set(contract.refs) <= set(frame.columns), "exactly the FeatureService's features"
    assembled = contract.assemble(frame)  # the very call the gateway makes at serving time
    by_user = dict(zip(frame["user_id"], assembled.matrix, strict=True))
    # One default per value column (a vector feature spans several columns).
    defaults = np.array(
        [f.default for f in contract.features for _ in range(getattr(f, "length", 1))],
        dtype=np.float32,
    )
    user_cols = contract.columns_of("user")
    item_cols = contract.columns_of("item")
    np.testing.assert_array_equal(by_user["user_never_seen"][user_cols], defaults[user_cols])
    np.testing.assert_array_equal(by_user["user_never_seen"][item_cols], defaults[item_cols])
    # A year before any snapshot nothing was known yet: defaults again, never later values.
    early_row = assembled.matrix[frame["event_timestamp"].argmin()]
    np.testing.assert_array_equal(early_row[item_cols], defaults[item_cols])
    assert not assembled.missing[frame["user_id"] != "user_never_seen"][:, item_cols].all()


def test_time_split_tests_on_the_latest_events(feature_repo_ready: Any) -> None:
    frame = feature_repo_ready.data.tables["impressions_item"]
    train, test = time_split(frame, 0.2)
    assert train["event_timestamp"].max() < test["event_timestamp"].min()
    assert abs(len(test) / len(frame) - 0.2) < 0.01


def test_manifest_has_contract_data_metrics_and_provenance(model_repository: Path) -> None:
    for target in TARGETS.values():
        model_dir = model_repository / target.name
        manifest = read_manifest(model_dir, list_versions(model_dir)[-1])
        contract = manifest["contract"]
        assert contract["feature_service"] == target.feature_service
        assert len(contract["schema_hash"]) == 16 and contract["features"]
        assert manifest["parity_max_abs_diff"] <= 1e-5
        assert manifest["code_version"] and manifest["weights_digest"]
        training = manifest["training"]
        assert training["train_rows"] > training["test_rows"] > 0
        assert training["train_window"][1] < training["test_window"][0]
        assert training["config"]["seed"] == 7 and training["data_digest"]
        assert "--seed 7" in training["reproduce"]
        # Refitted on every training row for the epoch count the validation rows picked.
        best = min(training["epochs"], key=lambda e: e["valid_logloss"])["epoch"]
        assert training["refit_epochs"] == best
        assert training["fit_rows"] == training["train_rows"] > training["valid_rows"] > 0
        assert manifest["model"]["outputs"][:2] == ["score__0", "contrib__1"]
        table = manifest["evaluation"]["table"]
        assert {"model", "oracle", "popularity", "user_top_category"} <= set(table)
        assert all(set(row) == set(METRICS) for row in table.values())
        metrics = manifest["metrics"]
        groups = manifest["model"]["feature_groups"]
        assert set(manifest["contributions"]["mean_abs_on_test"]) == set(groups)
        if target.name not in SIZED_FOR_QUALITY:
            continue
        # Small data, few epochs: well above the baselines and most of the way to the oracle
        # (the default-data figures are in docs/model-quality.md, not in a timed test).
        assert metrics["auc"] > 0.8 * metrics["oracle_auc"], metrics
        assert metrics["auc"] > table["popularity"]["auc"], table
        assert metrics["auc"] > table["user_top_category"]["auc"], table
        assert metrics["ndcg@10"] > table["popularity"]["ndcg@10"], table


def test_configs_and_version_agree_with_the_model(model_repository: Path) -> None:
    for target in TARGETS.values():
        model_dir = model_repository / target.name
        manifest = read_manifest(model_dir, list_versions(model_dir)[-1])
        for path in (model_dir / "config.pbtxt", model_dir / "configs" / "cpu.pbtxt"):
            cfg = text_format.Parse(path.read_text(), mc.ModelConfig())
            assert [o.name for o in cfg.output] == manifest["model"]["outputs"]
            groups = cfg.parameters["feature_groups"].string_value.split(",")
            assert groups == manifest["model"]["feature_groups"]
            assert cfg.input[0].dims == [len(manifest["model"]["columns"])]
        model = torch.jit.load(str(model_dir / str(manifest["version"]) / MODEL_FILE))
        x = torch.zeros(3, len(manifest["model"]["columns"]))
        outputs = model(x)
        assert len(outputs) == len(manifest["model"]["outputs"])
        assert outputs[1].shape == (3, len(groups))


def labels_with(feature_repo_ready: Any, tmp_path: Path, kind: str, purchase: bool) -> Path:
    """A repo folder whose impressions have (or lack) a purchase label."""
    impressions = feature_repo_ready.data.tables[f"impressions_{kind}"].copy()
    impressions = impressions.drop(columns=["purchased", "p_purchase"], errors="ignore")
    if purchase:
        rng = np.random.default_rng(0)
        impressions["p_purchase"] = impressions["p_click"] * 0.3
        bought = rng.uniform(size=len(impressions)) < 0.3
        impressions["purchased"] = (impressions["clicked"].astype(bool) & bought).astype("int64")
    (tmp_path / "data").mkdir(parents=True)
    impressions.to_parquet(tmp_path / "data" / f"impressions_{kind}.parquet")
    return tmp_path


@pytest.mark.parametrize("purchase", [False, True], ids=["click-only", "click+purchase"])
def test_purchase_label_adds_a_purchase_head(
    feature_repo_ready: Any, tmp_path: Path, purchase: bool
) -> None:
    target = TARGETS["activity_ranker"]
    repo = labels_with(feature_repo_ready, tmp_path / "repo", "activity", purchase)
    result = train_target(
        feature_repo_ready.store(), target, repo, tmp_path / "models", TrainConfig(epochs=1)
    )
    model = result.manifest["model"]
    expected = ["score__0", "contrib__1", *(["purchase__2"] if purchase else [])]
    assert model["outputs"] == expected
    assert model["tasks"] == (["clicked", "purchased"] if purchase else ["clicked"])
    assert ("purchase_auc" in result.metrics) == purchase
    artifact = (tmp_path / "models" / target.name / "1" / MODEL_FILE).read_bytes()
    outputs = torch.jit.load(io.BytesIO(artifact))(torch.zeros(2, len(model["columns"])))
    assert len(outputs) == len(expected)


def test_retraining_is_idempotent_and_reproducible_from_the_manifest(
    feature_repo_ready: Any, tmp_path: Path
) -> None:
    target = TARGETS["activity_ranker"]
    store = feature_repo_ready.store()
    cfg = TrainConfig(epochs=1)
    first = train_target(store, target, feature_repo_ready.path, tmp_path / "a", cfg)
    again = train_target(store, target, feature_repo_ready.path, tmp_path / "a", cfg)
    assert (first.version, first.created) == (1, True)
    assert (again.version, again.created) == (1, False)
    changed = train_target(
        store, target, feature_repo_ready.path, tmp_path / "a", TrainConfig(epochs=2)
    )
    assert (changed.version, changed.created) == (2, True)

    # Everything needed to reproduce a version is in its manifest.
    manifest = json.loads((tmp_path / "a" / target.name / "1" / "manifest.json").read_text())
    replay = TrainConfig.from_dict(manifest["training"]["config"])
    assert replay == cfg
    rebuilt = train_target(store, target, feature_repo_ready.path, tmp_path / "b", replay)
    assert rebuilt.manifest["weights_digest"] == manifest["weights_digest"]
    assert rebuilt.manifest["training"]["data_digest"] == manifest["training"]["data_digest"]
    assert rebuilt.manifest["model"]["feature_groups"] == list(
        feature_groups(contract_from_store(store, target.feature_service))
    )
