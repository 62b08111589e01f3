"""Implicit feedback against the oracle: what a shop without an impression log loses.

    PYTHONPATH=services .venv/bin/python bench/synthetic_implicit.py

On the default synthetic log (`scoring data generate`), in a private feature repo and model
repository, two item_ranker versions are trained:

- impressions: the labelled impressions, as `scoring train` does on this log (the oracle
  comparison of docs/model-quality.md);
- implicit only: the log's positive events (view, click, add-to-cart, purchase) with sampled
  negatives, its impressions dropped, and nothing from the time-split holdout on (so it never
  sees the test window).

Both are then scored on the same test impressions (the latest 20% by time, the impressions
version's own test set) beside the generator's true click probability (the oracle) and
popularity: AUC, group AUC, NDCG@10, and each one's ratio to the oracle. A table in the
terminal and Markdown at --out.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from scoring.core import feature_repo
from scoring.core.settings import (
    FeastSettings,
    ImplicitFeedbackSettings,
    Settings,
    TritonSettings,
)
from scoring.core.targets import TARGETS
from scoring.datagen.dataset import build_data_set
from scoring.datagen.synthetic import SyntheticConfig, generate
from scoring.evaluation.model_scorer import model_scorer
from scoring.trainer.examples import LABEL, ORACLE, TIMESTAMP
from scoring.trainer.ranking_metrics import auc, gauc, ranking_metrics
from scoring.trainer.train import TrainConfig, labels_path, train_target

ROOT = Path(__file__).resolve().parents[1]
TEXT_CACHE = ROOT / ".pytest_cache" / "scoring" / "text_cache.parquet"
TARGET = TARGETS["item_ranker"]
console = Console()


def _train(settings: Settings, implicit: ImplicitFeedbackSettings, holdout: Any) -> int:
    store = feature_repo.open_store(settings.feast.repo_path)
    started = time.monotonic()
    result = train_target(
        store,
        TARGET,
        settings.feast.repo_path,
        settings.triton.model_repository,
        TrainConfig(),
        implicit=implicit,
        holdout=holdout,
    )
    console.log(f"{implicit.mode}: v{result.version} in {time.monotonic() - started:.0f} s")
    return result.version


def _row(name: str, y: np.ndarray, scores: np.ndarray, users: np.ndarray) -> dict[str, Any]:
    ranking = ranking_metrics(y, scores, users, ks=(10,))
    return {
        "method": name,
        "auc": auc(y, scores),
        "gauc": gauc(y, scores, users),
        "ndcg@10": ranking["ndcg@10"],
    }


def run(seed: int, out: Path, keep: bool) -> list[dict[str, Any]]:
    root = Path(tempfile.mkdtemp(prefix="synthetic-implicit-"))
    try:
        repo = root / "features"
        shutil.copytree(
            ROOT / "features", repo, ignore=shutil.ignore_patterns("data", "__pycache__")
        )
        settings = Settings(
            feast=FeastSettings(repo_path=repo),
            triton=TritonSettings(model_repository=root / "model_repository"),
        )
        with console.status("generating the default synthetic log and its feature tables"):
            log = generate(SyntheticConfig(seed=seed))
            cache = TEXT_CACHE if TEXT_CACHE.exists() else None
            build_data_set(log, repo / "data", text_cache=cache)
            feature_repo.apply(repo)
        with console.status("training on the impressions"):
            shown = _train(settings, ImplicitFeedbackSettings(mode="impressions"), "none")
        with console.status("training on the positive events only (impressions dropped)"):
            implicit = _train(settings, ImplicitFeedbackSettings(mode="implicit"), "time")

        labels = pd.read_parquet(labels_path(repo, TARGET))
        times = pd.to_datetime(labels[TIMESTAMP], utc=True)
        cut = times.quantile(0.8)
        test, train = labels[times >= cut], labels[times < cut]
        events = pd.read_parquet(repo / "data" / "events.parquet")
        positives = events[events["event_type"] != "impression"]
        holdout_cut = pd.to_datetime(positives["timestamp"], utc=True).quantile(0.8)
        console.log(
            f"test impressions from {cut:%Y-%m-%d %H:%M}; implicit training stops at "
            f"{holdout_cut:%Y-%m-%d %H:%M} (time holdout)"
        )
        frame = pd.DataFrame(
            {
                "user_id": test["user_id"].astype("category"),
                "item_id": test["item_id"].astype("category"),
                "timestamp": pd.to_datetime(test[TIMESTAMP], utc=True),
            }
        ).reset_index(drop=True)
        y = test[LABEL].to_numpy()
        users = test["user_id"].to_numpy()
        rows = []
        with console.status("scoring the test impressions"):
            for name, version in (("impressions", shown), ("implicit only", implicit)):
                scorer = model_scorer(settings, TARGET.name, version)
                assert scorer is not None
                rows.append(_row(f"model: {name} (v{version})", y, scorer(frame), users))
        rows.append(_row("oracle (true p_click)", y, test[ORACLE].to_numpy(), users))
        clicks = train.groupby("item_id")[LABEL].sum()
        popular = test["item_id"].map(clicks).fillna(0).to_numpy(dtype=np.float64)
        rows.append(_row("popularity (training clicks)", y, popular, users))
        oracle = rows[2]
        for row in rows:
            row["auc / oracle"] = row["auc"] / oracle["auc"]
        _print(rows, len(test), out)
        return rows
    finally:
        if keep:
            console.log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _print(rows: list[dict[str, Any]], n_test: int, out: Path) -> None:
    columns = ("auc", "gauc", "ndcg@10", "auc / oracle")
    table = Table(title=f"item_ranker on {n_test:,} test impressions of the default synthetic log")
    table.add_column("method")
    for column in columns:
        table.add_column(column, justify="right")
    lines = [
        "| method | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for row in rows:
        values = [f"{row[c]:.4f}" for c in columns]
        table.add_row(row["method"], *values)
        lines.append(f"| {row['method']} | " + " | ".join(values) + " |")
    console.print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    console.log(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=ROOT / ".run" / "synthetic_implicit.md")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repo")
    args = parser.parse_args()
    run(args.seed, args.out, args.keep)


if __name__ == "__main__":
    main()
