"""A purchase-only log (no impressions) trains to a version, which `scoring evaluate` scores."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from scoring.core import feature_repo
from scoring.core.settings import (
    FeastSettings,
    ImplicitFeedbackSettings,
    Settings,
    TritonSettings,
)
from scoring.core.targets import TARGETS
from scoring.datagen.dataset import build_data_set
from scoring.datagen.events import EventLog
from scoring.datagen.synthetic import SyntheticConfig, generate
from scoring.evaluation import EvalProtocol, build_tasks, load_interactions
from scoring.trainer.export import read_manifest
from scoring.trainer.implicit import TrainingDataError
from scoring.trainer.train import TrainConfig, train_target

from ..conftest import TEXT_CACHE, copy_feature_repo

TINY = SyntheticConfig(
    n_users=120, n_items=80, n_activities=4, n_item_impressions=6000, n_activity_impressions=200
)
IMPLICIT = ImplicitFeedbackSettings(max_rows=4000, popularity_share=0.5)  # both kinds


@dataclass(frozen=True)
class PurchaseLog:
    repo: Path
    models: Path

    def settings(self) -> Settings:
        return Settings(
            feast=FeastSettings(repo_path=self.repo),
            triton=TritonSettings(model_repository=self.models),
        )


@pytest.fixture(scope="module")
def purchases(tmp_path_factory: pytest.TempPathFactory) -> PurchaseLog:
    """A feature repo built from the purchases of a small synthetic log, and nothing else."""
    root = tmp_path_factory.mktemp("purchases")
    repo = copy_feature_repo(root / "features")
    log = generate(TINY)
    events = log.events[log.events["event_type"] == "purchase"].reset_index(drop=True)
    build_data_set(EventLog(events, log.items, log.users), repo / "data", text_cache=TEXT_CACHE)
    feature_repo.apply(repo)
    return PurchaseLog(repo, root / "model_repository")


@pytest.fixture(scope="module")
def trained(purchases: PurchaseLog) -> dict[str, Any]:
    store = feature_repo.open_store(purchases.repo)
    result = train_target(
        store,
        TARGETS["item_ranker"],
        purchases.repo,
        purchases.models,
        TrainConfig(epochs=2),
        implicit=IMPLICIT,
        holdout="loo",
    )
    assert result.created
    return read_manifest(purchases.models / "item_ranker", result.version)


def test_a_purchase_only_log_trains_to_a_version(
    purchases: PurchaseLog, trained: dict[str, Any]
) -> None:
    training = trained["training"]
    implicit = training["sources"]["implicit"]
    assert "impressions" not in training["sources"]
    assert implicit["positives"] > 100
    assert implicit["negatives_popularity"] > 0 and implicit["negatives_uniform"] > 0
    assert training["train_rows"] + training["test_rows"] <= IMPLICIT.max_rows
    assert trained["model"]["tasks"] == ["clicked"]  # every positive is a purchase: one task
    assert 0.0 <= trained["metrics"]["auc"] <= 1.0  # quality: docs/data.md
    assert (purchases.models / "item_ranker" / "1" / "model.pt").exists()


def test_without_implicit_feedback_the_error_says_what_is_missing(
    purchases: PurchaseLog,
) -> None:
    store = feature_repo.open_store(purchases.repo)
    with pytest.raises(TrainingDataError, match="impressions_item.parquet has no labelled"):
        train_target(
            store, TARGETS["item_ranker"], purchases.repo, purchases.models, TrainConfig(epochs=1)
        )


def test_the_versions_scorer_reads_each_row_as_of_its_time(
    purchases: PurchaseLog, trained: dict[str, Any]
) -> None:
    from scoring.evaluation.model_scorer import model_scorer

    scorer = model_scorer(purchases.settings(), "item_ranker", 1)
    assert scorer is not None
    tasks = build_tasks(
        load_interactions(purchases.repo / "data"), EvalProtocol(negatives=5, max_users=20)
    )
    n, width = tasks.candidate_codes.shape
    frame = tasks.frame(np.repeat(np.arange(n), width), tasks.candidate_codes.ravel())
    scores = scorer(frame)
    assert scores.shape == (len(frame),) and np.isfinite(scores).all()
    order = np.random.default_rng(0).permutation(len(frame))
    shuffled = scorer(frame.iloc[order].reset_index(drop=True))
    np.testing.assert_allclose(shuffled, scores[order], rtol=1e-5)  # float32 batches differ
    # The same rows a month earlier read other (earlier) features.
    earlier = frame.assign(timestamp=frame["timestamp"] - pd.Timedelta(days=20))
    assert not np.allclose(scorer(earlier), scores)


def test_scoring_evaluate_reports_the_model_beside_the_baselines(
    purchases: PurchaseLog, trained: dict[str, Any], tmp_path: Path
) -> None:
    from scoring.evaluation.run import run_evaluation

    console = Console(file=io.StringIO(), width=120)
    report = run_evaluation(
        purchases.settings(), console, negatives=20, max_users=40, out=tmp_path / "r.md"
    )
    assert "item_ranker v1" in report.metrics
    assert set(report.baselines) < set(report.metrics)
    manifest = read_manifest(purchases.models / "item_ranker", 1)
    assert manifest["offline_evaluation"]["loo"]["digest"] == report.digest


def test_the_cli_refuses_a_log_with_nothing_usable_without_a_traceback(
    purchases: PurchaseLog, tmp_path: Path
) -> None:
    from scoring.cli import app

    # Views only count as positives here, and the log holds purchases only.
    views_only = {"item_ranker": {"positive_events": {"purchase": 0.0, "view": 1.0}}}
    env = {
        "SCORING_FEAST__REPO_PATH": str(purchases.repo),
        "SCORING_TRITON__MODEL_REPOSITORY": str(tmp_path / "models"),
        "SCORING_REGISTRY__URL": f"sqlite:///{tmp_path / 'registry.db'}",
        "SCORING_TRAINING__IMPLICIT": json.dumps(views_only),
    }
    result = CliRunner().invoke(app, ["train", "--target", "item_ranker"], env=env)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "train refused: item_ranker: nothing to train on" in text
    assert "impressions_item.parquet has no labelled impressions" in text
    assert "no positive event" in text and "the log has purchase" in text
    assert "Traceback" not in result.output
    assert not (tmp_path / "models" / "item_ranker" / "1").exists()


def test_training_before_the_definitions_are_registered_says_what_to_run(tmp_path: Path) -> None:
    from scoring.cli import app

    repo = copy_feature_repo(tmp_path / "features")  # definitions only: never applied
    env = {
        "SCORING_FEAST__REPO_PATH": str(repo),
        "SCORING_TRITON__MODEL_REPOSITORY": str(tmp_path / "models"),
        "SCORING_REGISTRY__URL": f"sqlite:///{tmp_path / 'registry.db'}",
    }
    result = CliRunner().invoke(app, ["train", "--target", "item_ranker"], env=env)
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "feature service item_ranker_v1 is not registered" in text
    assert "scoring features apply" in text
    assert "Traceback" not in result.output
