"""A new user's path on real shop logs: the committed slices of two public purchase logs
(tests/fixtures/real/<log>/PROVENANCE.md) go through `scoring data import`, `scoring train` and
`scoring evaluate`, the CLI commands the README gives, in a private feature repo and model
repository. Purchase logs have no impressions: training is implicit feedback only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scoring.cli import app
from tests.cli_output import flat
from tests.conftest import TEXT_CACHE, copy_feature_repo

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"
# Small enough for CI (about a minute a log): 20k examples, 2,000 baskets, 4 epochs.
IMPLICIT = json.dumps({"item_ranker": {"max_rows": 20_000}})
BASKETS = json.dumps({"max_baskets": 2_000})


@pytest.mark.parametrize("name", ["ta-feng", "online-retail"])
def test_a_real_log_imports_trains_and_beats_popularity(name: str, tmp_path: Path) -> None:
    folder = REAL / name
    repo = copy_feature_repo(tmp_path / "features")
    (repo / "data").mkdir()
    if TEXT_CACHE.exists():  # reuse the test runs' text encodings
        (repo / "data" / "text_cache.parquet").write_bytes(TEXT_CACHE.read_bytes())
    env = {
        "SCORING_FEAST__REPO_PATH": str(repo),
        "SCORING_TRITON__MODEL_REPOSITORY": str(tmp_path / "model_repository"),
        "SCORING_REGISTRY__URL": f"sqlite:///{tmp_path / 'registry.db'}",
        "SCORING_TRAINING__IMPLICIT": IMPLICIT,
        "SCORING_TRAINING__BASKETS": BASKETS,
    }
    runner = CliRunner()
    imported = runner.invoke(
        app,
        ["data", "import", str(folder / "events.parquet")]
        + ["--items", str(folder / "items.parquet"), "--users", str(folder / "users.parquet")],
        env=env,
    )
    assert imported.exit_code == 0, imported.output
    assert "registered the feature definitions" in imported.output

    # Every target, as the README's `scoring train`: a shop without campaigns has nothing for
    # the activity ranker, which is skipped (said why) while the item ranker trains.
    args = ["train", "--holdout", "loo", "--epochs", "4", "--no-report"]
    trained = runner.invoke(app, args, env=env)
    assert trained.exit_code == 0, trained.output
    assert "activity_ranker skipped: activity_ranker: nothing to train on" in flat(trained.output)
    assert "no bundle impressions" in flat(trained.output)  # bundle_ranker skipped too
    version = tmp_path / "model_repository" / "item_ranker" / "1"
    manifest = json.loads((version / "manifest.json").read_text())
    implicit = manifest["training"]["sources"]["implicit"]
    assert "impressions" not in manifest["training"]["sources"]
    assert implicit["positives"] > 1000 and manifest["training"]["sources"]["holdout"] == "loo"

    out = tmp_path / "report.md"
    evaluated = runner.invoke(app, ["evaluate", "--max-users", "0", "--out", str(out)], env=env)
    assert evaluated.exit_code == 0, evaluated.output
    assert "item_ranker v1" in flat(evaluated.output)
    report = json.loads(out.with_suffix(".json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    assert report["users"] == summary["users"]  # every user of the slice has a held-out item
    model, popular = report["metrics"]["item_ranker v1"], report["metrics"]["popularity"]
    # A slice is too small for the full-log target (docs/data.md); a model that learned
    # nothing from who bought what ranks at or below all-time popularity.
    assert model["hr@10"] > popular["hr@10"] and model["ndcg@10"] > popular["ndcg@10"]
    # The figures are in the version's manifest, for the promotion gates.
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["offline_evaluation"]["loo"]["metrics"] == report["metrics"]

    # Complete the basket: the log's orders (order_id) are the baskets.
    args = ["train", "--target", "basket_completer", "--holdout", "basket", "--epochs", "4"]
    trained = runner.invoke(app, [*args, "--no-report"], env=env)
    assert trained.exit_code == 0, trained.output
    out = tmp_path / "basket.md"
    args = ["evaluate", "--target", "basket_completer", "--protocol", "basket"]
    evaluated = runner.invoke(app, [*args, "--max-users", "0", "--out", str(out)], env=env)
    assert evaluated.exit_code == 0, evaluated.output
    report = json.loads(out.with_suffix(".json").read_text())
    model = next(v for k, v in report["metrics"].items() if k.startswith("basket_completer"))
    assert report["users"] > 50 and 0.5 < model["auc"] <= 1.0
    assert set(report["baselines"]) == {
        "popularity",
        "co-occurrence with the cart",
        "most bought (user)",
    }
