"""basket_completer from a log's baskets: trained, registered and scored by `scoring evaluate`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from scoring.cli import app
from scoring.core import feature_repo
from scoring.core.settings import FeastSettings, RegistrySettings, Settings, TritonSettings
from scoring.datagen.dataset import build_data_set
from scoring.datagen.events import EventLog
from scoring.datagen.synthetic import SyntheticConfig, generate
from scoring.evaluation.baselines import BASKET_BASELINES
from scoring.trainer.export import read_manifest
from scoring.trainer.train import TrainConfig
from scoring.workflows.training import train_and_register

from ..cli_output import flat
from ..conftest import TEXT_CACHE, copy_feature_repo

SHOP = SyntheticConfig(
    n_users=300, n_items=120, n_activities=4, n_item_impressions=3000, n_activity_impressions=300
)


@dataclass(frozen=True)
class Shop:
    root: Path
    repo: Path

    def settings(self) -> Settings:
        return Settings(
            feast=FeastSettings(repo_path=self.repo),
            triton=TritonSettings(model_repository=self.root / "model_repository"),
            registry=RegistrySettings(url=f"sqlite:///{self.root / 'registry.db'}"),
        )

    def env(self) -> dict[str, str]:
        return {
            "SCORING_FEAST__REPO_PATH": str(self.repo),
            "SCORING_TRITON__MODEL_REPOSITORY": str(self.root / "model_repository"),
            "SCORING_REGISTRY__URL": f"sqlite:///{self.root / 'registry.db'}",
        }


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    """A synthetic shop with baskets and without bundles, its features registered."""
    root = tmp_path_factory.mktemp("baskets")
    repo = copy_feature_repo(root / "features")
    log = generate(SHOP)
    events = log.events[log.events["bundle_id"] == ""].reset_index(drop=True)
    no_bundles = EventLog(events, log.items, log.users, log.activities)
    build_data_set(no_bundles, repo / "data", text_cache=TEXT_CACHE)
    feature_repo.apply(repo)
    return Shop(root, repo)


@pytest.fixture(scope="module")
def trained(shop: Shop) -> dict[str, Any]:
    skipped: list[tuple[str, str]] = []
    models = train_and_register(
        shop.settings(),
        ["bundle_ranker", "basket_completer"],
        TrainConfig(epochs=2),
        holdout="basket",
        on_skip=lambda name, why: skipped.append((name, why)),
    )
    assert [m.target for m in models] == ["basket_completer"]
    assert len(skipped) == 1 and skipped[0][0] == "bundle_ranker"
    assert "no bundle impressions" in skipped[0][1]
    return read_manifest(shop.root / "model_repository" / "basket_completer", models[0].version)


def test_basket_completer_trains_on_basket_examples_with_the_holdout(
    trained: dict[str, Any],
) -> None:
    training = trained["training"]
    sources = training["sources"]
    assert sources["mode"] == "baskets" and sources["holdout"] == "basket"
    baskets = sources["baskets"]
    assert baskets["positives"] > 50 and baskets["baskets_usable"] < baskets["baskets"]
    assert baskets["negatives_popularity"] > 0 and baskets["negatives_uniform"] > 0
    assert trained["contract"]["feature_service"] == "basket_completer_v1"
    assert trained["model"]["tasks"] == ["clicked"]
    # The synthetic log's planted basket oracle is the report's oracle.
    assert 0.5 < trained["metrics"]["oracle_auc"] <= 1.0
    assert 0.0 < trained["metrics"]["auc"] <= 1.0


def test_scoring_evaluate_basket_reports_the_model_oracle_and_baselines(
    shop: Shop, trained: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "basket.md"
    args = ["evaluate", "--target", "basket_completer", "--protocol", "basket"]
    args += ["--negatives", "50", "--out", str(out)]
    result = CliRunner().invoke(app, args, env=shop.env())
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "complete the basket" in text and "AUC" in text
    assert "basket_completer v1 (model)" in text and "oracle (model)" in text
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["metrics"]) == {*BASKET_BASELINES, "oracle", "basket_completer v1"}
    assert report["protocol"]["kind"] == "basket" and report["users"] > 10
    for metrics in report["metrics"].values():
        assert 0 <= metrics["hr@10"] <= 1 and 0 <= metrics["auc"] <= 1
    assert set(report["lift"]["basket_completer v1"]) == {
        "hr@10",
        "ndcg@10",
        "recall@20",
        "mrr",
        "auc",
    }
    assert "Protocol: baskets are" in out.read_text()
    manifest = read_manifest(shop.root / "model_repository" / "basket_completer", 1)
    assert manifest["offline_evaluation"]["basket"]["digest"] == report["digest"]
    # Same log and seed: the same tasks and figures.
    again = tmp_path / "again.md"
    assert CliRunner().invoke(app, [*args[:-1], str(again)], env=shop.env()).exit_code == 0
    second = json.loads(again.with_suffix(".json").read_text())
    assert second["digest"] == report["digest"] and second["metrics"] == report["metrics"]


def test_the_cli_trains_the_same_version_again(shop: Shop, trained: dict[str, Any]) -> None:
    args = ["train", "--target", "basket_completer", "--epochs", "2", "--holdout", "basket"]
    result = CliRunner().invoke(app, [*args, "--no-report"], env=shop.env())
    assert result.exit_code == 0, result.output
    assert "(unchanged)" in flat(result.output)
