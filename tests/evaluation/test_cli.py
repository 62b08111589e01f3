"""`scoring evaluate` on synthetic data built by `scoring data generate` in a private repo."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from scoring.cli import app
from scoring.evaluation import Scorer, model_scorer
from scoring.evaluation.baselines import BASELINES
from tests.cli_output import flat, usage_error
from tests.conftest import TEXT_CACHE

GENERATE = [
    "data", "generate", "--users", "200", "--items", "150", "--activities", "20",
    "--item-impressions", "4000", "--activity-impressions", "2000", "--days", "20",
    "--no-register",  # the private repo holds tables only, no feature definitions
]  # fmt: skip


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("evaluate")
    data = root / "features" / "data"
    data.mkdir(parents=True)
    if TEXT_CACHE.exists():  # reuse the test runs' text encodings
        (data / "text_cache.parquet").write_bytes(TEXT_CACHE.read_bytes())
    env = {
        "SCORING_FEAST__REPO_PATH": str(root / "features"),
        "SCORING_TRITON__MODEL_REPOSITORY": str(root / "model_repository"),
    }
    result = CliRunner().invoke(app, GENERATE, env=env)
    assert result.exit_code == 0, result.output
    return env


def test_the_build_keeps_the_normalised_event_log(env: dict[str, str]) -> None:
    events = pd.read_parquet(Path(env["SCORING_FEAST__REPO_PATH"]) / "data" / "events.parquet")
    assert set(events.columns) == {
        "user_id", "item_id", "event_type", "timestamp", "price", "quantity", "activity_id",
        "order_id", "bundle_id",
    }  # fmt: skip
    assert {"purchase", "view", "impression"} <= set(events["event_type"])


def test_cli_prints_the_table_and_writes_the_report(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    args = ["evaluate", "--max-users", "120", "--out", str(out)]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    text = flat(result.output)
    assert "no trained item_ranker" in text and "baselines only" in text
    assert "HR@10" in text and "NDCG@10" in text and "Recall@20" in text and "MRR" in text
    for name in BASELINES:
        assert name in text
    lines = out.read_text().splitlines()
    assert lines[0].startswith("# offline evaluation, leave-one-out: ")
    rows = [ln for ln in lines if ln.startswith(("| popularity", "| most", "| co-"))]
    assert len(rows) == 4 and sum("*" in r for r in rows) >= 1
    report = json.loads(out.with_suffix(".json").read_text())
    assert sorted(report["metrics"]) == sorted(BASELINES)
    assert report["protocol"]["negatives"] == 100 and report["protocol"]["kind"] == "loo"
    assert 0 < report["users"] <= 120
    for metrics in report["metrics"].values():
        assert 0 <= metrics["hr@10"] <= metrics["recall@20"] <= 1
    # Same log, same seed: the same negatives and the same figures.
    again = tmp_path / "again.md"
    assert CliRunner().invoke(app, [*args[:-1], str(again)], env=env).exit_code == 0
    second = json.loads(again.with_suffix(".json").read_text())
    assert second["digest"] == report["digest"] and second["metrics"] == report["metrics"]


def test_cli_time_split_over_the_full_catalogue(env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "time.md"
    args = ["evaluate", "--protocol", "time", "--negatives", "20", "--full-catalogue"]
    result = CliRunner().invoke(app, [*args, "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "time split (cut" in flat(result.output) and "full catalogue" in flat(result.output)
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["data"]["cut"] is not None
    assert sorted(report["full_catalogue"]) == sorted(BASELINES)


def test_a_model_scorer_joins_the_table_and_its_manifest(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = Path(env["SCORING_TRITON__MODEL_REPOSITORY"]) / "item_ranker" / "1"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text(json.dumps({"version": 1}))

    def by_id(settings: object, target: str, v: int) -> Scorer:
        assert (target, v) == ("item_ranker", 1)
        return lambda f: f["item_id"].astype(str).str.len().to_numpy(dtype=float)

    monkeypatch.setattr(model_scorer, "model_scorer", by_id)
    out = tmp_path / "model.md"
    result = CliRunner().invoke(app, ["evaluate", "--out", str(out)], env=env)
    assert result.exit_code == 0, result.output
    assert "item_ranker v1 (model)" in flat(result.output)
    assert "lift vs best baseline" in flat(result.output)
    entry = json.loads((version / "manifest.json").read_text())["offline_evaluation"]["loo"]
    assert set(entry["lift"]["item_ranker v1"]) == {"hr@10", "ndcg@10", "recall@20", "mrr"}
    assert entry["digest"] == json.loads(out.with_suffix(".json").read_text())["digest"]
    best = entry["best_baseline"]["ndcg@10"]
    assert best["value"] == max(entry["metrics"][n]["ndcg@10"] for n in BASELINES)
    model = entry["metrics"]["item_ranker v1"]["ndcg@10"]
    assert entry["lift"]["item_ranker v1"]["ndcg@10"] == pytest.approx(model / best["value"] - 1)

    def never(*args: object) -> None:
        raise AssertionError("--baselines-only must not build the model's scorer")

    monkeypatch.setattr(model_scorer, "model_scorer", never)
    args = ["evaluate", "--baselines-only", "--out", str(tmp_path / "b.md")]
    assert CliRunner().invoke(app, args, env=env).exit_code == 0
    wrong = CliRunner().invoke(app, ["evaluate", "--version", "3"], env=env)
    assert wrong.exit_code == 2 and "no version 3" in flat(wrong.output)
    (version / "manifest.json").unlink()
    version.rmdir()


def test_cli_without_an_event_log_exits_2_and_says_how_to_get_one(tmp_path: Path) -> None:
    env = {"SCORING_FEAST__REPO_PATH": str(tmp_path / "features")}
    text = usage_error(["evaluate", "--baselines-only"], env)
    assert "no event log at" in text and "scoring data generate" in text
    assert "Traceback" not in text


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--protocol", "random"], "--protocol: 'random' is not one of loo, time"),
        (["--negatives", "0"], "negatives must be at least 1"),
        (["--negatives", "500"], "150 items: 500 negatives need at least 501"),
        (["--target", "activity_ranker"], "ranks activity candidates"),
        (["--target", "nope"], "unknown target 'nope'"),
        (["--target", "basket_completer"], "completes a cart; evaluate it with --protocol basket"),
    ],
)
def test_cli_refuses_bad_options_by_name(env: dict[str, str], args: list[str], says: str) -> None:
    assert says in usage_error(["evaluate", "--baselines-only", *args], env)
