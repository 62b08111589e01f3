"""Trains one model target: point-in-time training set from Feast, fit, evaluate, export."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from scoring.core.contract import FeatureContract, contract_from_store
from scoring.core.targets import USER_JOIN_KEY, Target
from scoring.trainer.export import (
    export_torchscript,
    list_versions,
    read_manifest,
    weights_digest,
    write_version,
)
from scoring.trainer.metrics import auc, logloss
from scoring.trainer.model import Ranker
from scoring.triton.config import ModelSpec, write_configs

logger = logging.getLogger(__name__)

LABEL = "clicked"
ORACLE = "p_click"
TIMESTAMP = "event_timestamp"


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Hyper-parameters; all of them are recorded in the manifest."""

    epochs: int = 8
    batch_size: int = 512
    learning_rate: float = 3e-3
    hidden: tuple[int, ...] = (64, 32)
    test_fraction: float = 0.2
    seed: int = 7


@dataclass(frozen=True, slots=True)
class TrainResult:
    target: str
    version: int
    created: bool
    metrics: dict[str, float]
    manifest: dict[str, Any] = field(repr=False)


def labels_path(repo_path: Path, target: Target) -> Path:
    """Labelled impressions of a target's candidates (written by the data generator/importer)."""
    return repo_path / "data" / f"impressions_{target.kind.value}.parquet"


def training_frame(
    store: Any, target: Target, contract: FeatureContract, labels: Path
) -> pd.DataFrame:
    """Point-in-time correct rows: each impression joined with features as of its timestamp."""
    impressions = pd.read_parquet(labels)
    keep = [USER_JOIN_KEY, target.join_key, TIMESTAMP, *contract.request_fields, LABEL]
    keep += [ORACLE] if ORACLE in impressions.columns else []
    missing = [c for c in keep if c not in impressions.columns]
    if missing:
        raise ValueError(f"{labels}: missing columns {missing}")
    frame = store.get_historical_features(
        entity_df=impressions[keep],
        features=store.get_feature_service(contract.service),
        full_feature_names=True,
    ).to_df()
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return frame.sort_values([TIMESTAMP, USER_JOIN_KEY, target.join_key], ignore_index=True)


def time_split(frame: pd.DataFrame, test_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on the earlier events, test on the later ones; never a random row split."""
    cut = frame[TIMESTAMP].quantile(1.0 - test_fraction)
    return frame[frame[TIMESTAMP] < cut], frame[frame[TIMESTAMP] >= cut]


def fit(
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    on_epoch: Callable[[int, float], None] | None = None,
) -> Ranker:
    """Fits a Ranker with Adam on binary cross-entropy; deterministic for a given seed."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = Ranker(x.mean(axis=0), x.std(axis=0), cfg.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    loss_fn = nn.BCEWithLogitsLoss()
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y.astype(np.float32)).unsqueeze(1)
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.from_numpy(rng.permutation(len(x)))
        total = 0.0
        for start in range(0, len(x), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model.logits(xt[idx]), yt[idx])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        if on_epoch is not None:
            on_epoch(epoch, total / len(x))
    return model.eval()


def evaluate(model: Ranker, x: np.ndarray, frame: pd.DataFrame) -> dict[str, float]:
    with torch.no_grad():
        probs = model(torch.from_numpy(x)).numpy().ravel()
    y = frame[LABEL].to_numpy()
    metrics = {"auc": auc(y, probs), "logloss": logloss(y, probs), "ctr": float(y.mean())}
    if ORACLE in frame.columns:
        metrics["oracle_auc"] = auc(y, frame[ORACLE].to_numpy())
        metrics["oracle_logloss"] = logloss(y, frame[ORACLE].to_numpy())
    return metrics


def _code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def train_target(
    store: Any,
    target: Target,
    repo_path: Path,
    model_repository: Path,
    cfg: TrainConfig,
    on_epoch: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Builds the training set, fits, evaluates, exports and writes a new version.

    If the model is identical (same weights and feature schema) to the latest version, no new
    version is written: training twice on the same data is idempotent.
    """
    contract = contract_from_store(store, target.feature_service)
    frame = training_frame(store, target, contract, labels_path(repo_path, target))
    train, test = time_split(frame, cfg.test_fraction)
    if train.empty or test.empty or train[LABEL].nunique() < 2:
        raise ValueError(f"{target.name}: not enough labelled rows ({len(frame)})")
    x_train = contract.assemble(train).matrix
    x_test = contract.assemble(test).matrix
    model = fit(x_train, train[LABEL].to_numpy(), cfg, on_epoch)
    metrics = evaluate(model, x_test, test)
    artifact, parity = export_torchscript(model, torch.from_numpy(x_test[:1000]))
    digest = weights_digest(model, contract.schema_hash)

    model_dir = model_repository / target.name
    write_configs(
        model_dir, ModelSpec(target.name, contract.width, contract.service, contract.schema_hash)
    )
    versions = list_versions(model_dir)
    if versions and read_manifest(model_dir, versions[-1]).get("weights_digest") == digest:
        latest = read_manifest(model_dir, versions[-1])
        return TrainResult(target.name, versions[-1], False, latest["metrics"], latest)

    manifest: dict[str, Any] = {
        "target": target.name,
        "created_at": datetime.now(UTC).isoformat(),
        "code_version": _code_version(),
        "torch_version": torch.__version__,
        "weights_digest": digest,
        "parity_max_abs_diff": parity,
        "contract": contract.to_json(),
        "training": {
            "config": _config_dict(cfg),
            "train_window": [
                train[TIMESTAMP].min().isoformat(),
                train[TIMESTAMP].max().isoformat(),
            ],
            "test_window": [test[TIMESTAMP].min().isoformat(), test[TIMESTAMP].max().isoformat()],
            "train_rows": len(train),
            "test_rows": len(test),
        },
        "metrics": metrics,
    }
    version = write_version(model_dir, artifact, manifest)
    return TrainResult(target.name, version, True, metrics, {**manifest, "version": version})


def _config_dict(cfg: TrainConfig) -> dict[str, Any]:
    return {name: getattr(cfg, name) for name in cfg.__slots__}
