"""Trains one model target: point-in-time training set from Feast, fit, evaluate, export."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from scoring.core.contract import FeatureContract, contract_from_store
from scoring.core.settings import BasketExamplesSettings, ImplicitFeedbackSettings
from scoring.core.targets import USER_JOIN_KEY, Target
from scoring.trainer.evaluate import (
    Scored,
    category_ref,
    evaluate_scores,
    popularity,
    user_top_category,
)
from scoring.trainer.examples import (
    LABEL,
    OPTIONAL,
    ORACLE,
    PURCHASE,
    PURCHASE_ORACLE,
    TIMESTAMP,
    WEIGHT,
    TrainingData,
    point_in_time_frame,
    split_sources,
    training_data,
)
from scoring.trainer.export import (
    export_torchscript,
    list_versions,
    read_manifest,
    weights_digest,
    write_version,
)
from scoring.trainer.fit_loop import best_epoch, fit_epochs, optimiser, step
from scoring.trainer.implicit import Holdout, TrainingDataError
from scoring.trainer.layout import column_layout, feature_groups
from scoring.trainer.model import ModelConfig, Ranker, build_model, fit_preprocessing
from scoring.trainer.ranking_metrics import auc, best_f1_threshold
from scoring.trainer.served import ServedLog, with_served
from scoring.triton.config import ModelSpec, write_configs

logger = logging.getLogger(__name__)


# stage ("training set", "fit", "evaluate", "export"), done, total, note
ProgressHook = Callable[[str, int, int, str], None]


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Hyper-parameters; all of them are recorded in the manifest (`from_dict` reads them)."""

    # Regularised (weight decay 3e-3, a low-rank cross) and trained longer at a lower rate: on
    # the default data this took AUC/oracle from 0.951 / 0.956 to 0.974 / 0.968
    # (docs/model-quality.md).
    epochs: int = 20
    batch_size: int = 512
    learning_rate: float = 1e-3
    weight_decay: float = 3e-3
    purchase_weight: float = 1.0
    test_fraction: float = 0.2
    valid_fraction: float = 0.1
    patience: int = 4
    # After early stopping has picked the epoch count on the validation rows (the latest part
    # of the training window), fit again on every training row for that many epochs: the
    # freshest rows are the ones a young campaign or item shows up in.
    refit: bool = True
    seed: int = 7
    device: str = "cpu"
    # Fit from Parquet shards of the training matrix in shuffled batches with bounded memory
    # (scoring.trainer.streaming), and over `processes` data-parallel processes
    # (scoring.trainer.distributed; forces stream). The default fits the in-memory matrix.
    stream: bool = False
    processes: int = 1
    model: ModelConfig = ModelConfig()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        """The config a manifest recorded (lists back to tuples)."""
        # Manifests from before `log_numeric` existed were fitted with the "skewed" rule, and
        # those from before `refit` without a refit.
        model: dict[str, Any] = {"log_numeric": "skewed"} | {
            k: tuple(v) if isinstance(v, list) else v for k, v in raw["model"].items()
        }
        return cls(**{"refit": False, **raw, "model": dataclasses.replace(ModelConfig(), **model)})


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


def has_purchase_label(labels: Path) -> bool:
    """Whether the impressions carry a purchase label (then the model is multi-task)."""
    import pyarrow.parquet as pq

    return PURCHASE in pq.read_schema(labels).names


def model_spec(
    target: Target, contract: FeatureContract, purchase: bool, width: int | None = None
) -> ModelSpec:
    """The Triton model spec of a target: what `scoring train` writes as its configs.

    `width` is the assembled input width (training passes the matrix's); contract.width else.
    """
    return ModelSpec(
        target.name,
        contract.width if width is None else width,
        contract.service,
        contract.schema_hash,
        groups=feature_groups(contract),
        purchase=purchase,
    )


def training_frame(
    store: Any, target: Target, contract: FeatureContract, labels: Path
) -> pd.DataFrame:
    """Point-in-time correct rows: each impression joined with features as of its timestamp.

    Exactly the target's FeatureService, through Feast's `get_historical_features`; missing
    values stay missing here and get the serving defaults (and indicators) from the contract.
    """
    impressions = pd.read_parquet(labels)
    keep = [USER_JOIN_KEY, target.join_key, TIMESTAMP, *contract.request_fields, LABEL]
    keep += [c for c in OPTIONAL if c in impressions.columns]
    missing = [c for c in keep if c not in impressions.columns]
    if missing:
        raise ValueError(f"{labels}: missing columns {missing}")
    return point_in_time_frame(store, target, contract, impressions[keep])


def time_split(frame: pd.DataFrame, test_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on the earlier events, test on the later ones; never a random row split."""
    cut = frame[TIMESTAMP].quantile(1.0 - test_fraction)
    return frame[frame[TIMESTAMP] < cut], frame[frame[TIMESTAMP] >= cut]


def vector_lengths(frame: pd.DataFrame, contract: FeatureContract) -> dict[str, int]:
    """Element counts of vector-valued features (e.g. a text embedding), read from the data."""
    out = {}
    for ref in contract.refs:
        values = frame[ref].dropna() if ref in frame.columns else pd.Series(dtype=object)
        if len(values) and isinstance(values.iloc[0], list | tuple | np.ndarray):
            out[ref] = len(values.iloc[0])
    return out


def fit(
    model: Ranker,
    x: np.ndarray,
    y: np.ndarray,
    cfg: TrainConfig,
    valid: tuple[np.ndarray, np.ndarray] | None = None,
    on_progress: ProgressHook | None = None,
    weights: np.ndarray | None = None,
) -> tuple[Ranker, list[dict[str, float]]]:
    """Fits with Adam on binary cross-entropy (click, + purchase when y has 2 columns).

    `weights` (one per row of x) weigh each row's loss (a batch's loss is its weighted mean);
    None: every row the same.

    With `valid` rows (the latest part of the training window), each epoch is scored by the
    validation click logloss; training stops after `cfg.patience` epochs without improvement
    and the best epoch's weights are kept. Deterministic for a given seed on a given device.

    Returns:
        The fitted model (on CPU, eval mode) and per-epoch losses.
    """
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    device = torch.device(cfg.device)
    model = model.to(device)
    optimizer, task_weights = optimiser(model, cfg, y.shape[1], device)
    xt = torch.from_numpy(x).to(device)
    yt = torch.from_numpy(y.astype(np.float32)).to(device)
    wt = None if weights is None else torch.from_numpy(weights.astype(np.float32)).to(device)

    def train_epoch(epoch: int) -> float:
        order = torch.from_numpy(rng.permutation(len(x))).to(device)
        total = 0.0
        for start in range(0, len(x), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            w = None if wt is None else wt[idx]
            total += step(optimizer, model.logits, xt[idx], yt[idx], w, task_weights) * len(idx)
        return total / len(x)

    valid_loss = None if valid is None else partial(_valid_logloss, model, valid, device)
    history = fit_epochs(model, cfg, train_epoch, valid_loss, on_progress)
    return model.cpu().eval(), history


def shard_rows(rows: int, processes: int) -> int:
    """Row-group size of a training run's shards: 65,536 rows, smaller for small data so that
    each process gets several row groups (at least 64 rows a group)."""
    from scoring.trainer.streaming import ROW_GROUP_ROWS

    return max(64, min(ROW_GROUP_ROWS, -(-rows // (16 * processes))))


def fit_sharded(
    fresh_model: Callable[[], Ranker],
    x: np.ndarray,
    y: np.ndarray,
    weights: np.ndarray | None,
    n_fit: int,
    cfg: TrainConfig,
    on_progress: ProgressHook | None = None,
) -> tuple[Ranker, list[dict[str, float]], int]:
    """`fit` (and the refit) from Parquet shards of the matrix, in cfg.processes processes.

    Rows [:n_fit] fit, the rest validate; the shards live in a temporary folder for the run.

    Returns:
        The model, the early-stopped fit's history and the refit's epochs (0: no refit).
    """
    import tempfile

    from scoring.trainer.distributed import fit_distributed
    from scoring.trainer.streaming import TrainingShards, fit_streamed, write_shards

    def run(
        train: list[TrainingShards], valid: list[TrainingShards], run_cfg: TrainConfig
    ) -> tuple[Ranker, list[dict[str, float]]]:
        if run_cfg.processes > 1:
            model, history, _ = fit_distributed(fresh_model(), train, run_cfg, valid, on_progress)
            return model, history
        return fit_streamed(fresh_model(), train, run_cfg, valid, on_progress)

    group = shard_rows(len(x), cfg.processes)
    with tempfile.TemporaryDirectory(prefix="scoring-shards-") as tmp:
        w_fit = None if weights is None else weights[:n_fit]
        shards = [write_shards(Path(tmp) / "fit", x[:n_fit], y[:n_fit], w_fit, group)]
        valid = []
        if n_fit < len(x):
            w_valid = None if weights is None else weights[n_fit:]
            valid = [write_shards(Path(tmp) / "valid", x[n_fit:], y[n_fit:], w_valid, group)]
        model, history = run(shards, valid, cfg)
        refit_epochs = 0
        if cfg.refit and valid:
            refit_epochs = best_epoch(history)
            model, _ = run(shards + valid, [], dataclasses.replace(cfg, epochs=refit_epochs))
    return model, history, refit_epochs


def _valid_logloss(
    model: Ranker, valid: tuple[np.ndarray, np.ndarray], device: torch.device
) -> float:
    model.eval()
    with torch.no_grad():
        logits = model.logits(torch.from_numpy(valid[0]).to(device))[:, 0]
        y = torch.from_numpy(valid[1][:, 0].astype(np.float32)).to(device)
        return float(nn.functional.binary_cross_entropy_with_logits(logits, y))


def predict(model: Ranker, x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities [N, tasks] and click-logit contributions [N, G], in chunks."""
    probs, contribs = [], []
    with torch.no_grad():
        for start in range(0, len(x), chunk):
            logits, contrib, _ = model.explain(torch.from_numpy(x[start : start + chunk]))
            probs.append(torch.sigmoid(logits).numpy())
            contribs.append(contrib.numpy())
    return np.concatenate(probs), np.concatenate(contribs)


def evaluate(
    model: Ranker,
    x_train: np.ndarray,
    x_test: np.ndarray,
    train: pd.DataFrame,
    test: pd.DataFrame,
    target: Target,
    contract: FeatureContract,
    seed: int,
) -> dict[str, Any]:
    """The evaluation block of a manifest: flat model metrics, the full table, contributions."""
    train_probs, _ = predict(model, x_train)
    probs, contrib = predict(model, x_test)
    threshold = best_f1_threshold(train[LABEL].to_numpy(), train_probs[:, 0])
    key = target.join_key
    methods = [Scored("model", probs[:, 0], True)]
    if ORACLE in test.columns:
        methods.append(Scored("oracle", test[ORACLE].to_numpy(dtype=np.float64), True))
    methods.append(Scored("popularity", popularity(train, test, LABEL, key), False))
    category = category_ref(contract, target.kind.value)
    if category is not None:
        top = user_top_category(train, test, LABEL, key, category)
        methods.append(Scored("user_top_category", top, False))
    y, users = test[LABEL].to_numpy(), test[USER_JOIN_KEY].to_numpy()
    table = evaluate_scores(y, users, methods, threshold, seed)

    metrics = dict(table["model"])
    metrics["ctr"] = float(y.mean())
    if "oracle" in table:
        metrics["oracle_auc"] = table["oracle"]["auc"]
        metrics["oracle_logloss"] = table["oracle"]["logloss"]
        metrics["auc_vs_oracle"] = metrics["auc"] / metrics["oracle_auc"]
    if probs.shape[1] > 1:
        purchased = test[PURCHASE].to_numpy()
        metrics["purchase_auc"] = auc(purchased, probs[:, 1])
        if PURCHASE_ORACLE in test.columns:
            metrics["purchase_oracle_auc"] = auc(purchased, test[PURCHASE_ORACLE].to_numpy())
    groups = list(feature_groups(contract))
    return {
        "metrics": metrics,
        "evaluation": {
            "threshold": threshold,
            "threshold_rule": "F1-optimal on the training rows",
            "ranking_unit": "user: the user's test impressions, relevance = clicked",
            "table": table,
        },
        "contributions": {
            "mean_abs_on_test": dict(zip(groups, np.abs(contrib).mean(0).tolist(), strict=True)),
        },
    }


def _code_version() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _window(frame: pd.DataFrame) -> list[str]:
    return [frame[TIMESTAMP].min().isoformat(), frame[TIMESTAMP].max().isoformat()]


def train_target(
    store: Any,
    target: Target,
    repo_path: Path,
    model_repository: Path,
    cfg: TrainConfig,
    on_progress: ProgressHook | None = None,
    implicit: ImplicitFeedbackSettings | None = None,
    holdout: Holdout = "none",
    served: ServedLog | None = None,
    baskets: BasketExamplesSettings | None = None,
) -> TrainResult:
    """Builds the training set, fits, evaluates, exports and writes a new version.

    If the model is identical (same weights and feature schema) to the latest version, no new
    version is written: training twice on the same data is idempotent.

    Args:
        implicit: the target's implicit-feedback settings (scoring.trainer.examples: which
            sources train); None: labelled impressions only.
        holdout: leave out what `scoring evaluate --protocol loo|time|basket` holds out, so
            that the version can be evaluated on it.
        served: also (or only) train on the impressions the gateway served, with the exact
            inputs it scored and the Feedback that came back (scoring.trainer.served).
        baskets: how a target with a cart feature service makes its basket examples
            (scoring.trainer.baskets); the defaults when None.

    Raises:
        TrainingDataError: nothing (or too little) to train on; the message says what.
    """
    started = time.monotonic()

    def progress(stage: str, done: int, total: int, note: str = "") -> None:
        if on_progress is not None:
            on_progress(stage, done, total, note)

    progress("training set", 0, 1, "labels and examples")
    try:
        contract = contract_from_store(store, target.feature_service)
    except Exception as exc:  # FeatureServiceNotFoundException and kin: nothing registered
        raise TrainingDataError(
            f"{target.name}: feature service {target.feature_service} is not registered in "
            f"the feature store of {repo_path} ({type(exc).__name__}); run "
            "`scoring features apply` (`scoring data import` and `generate` do it)"
        ) from None
    labels = labels_path(repo_path, target)

    def joined(done: int, total: int) -> None:
        progress("training set", 0, 1, f"feast point-in-time join {done:,}/{total:,} rows")

    if served is not None and served.only:
        data = TrainingData(pd.DataFrame(), {"mode": "served only"})
    else:
        data = training_data(
            store, target, contract, labels, implicit, holdout, joined, baskets=baskets
        )
    if served is not None:
        data = with_served(data, served, target, contract)
    frame = data.frame
    train, test = split_sources(frame, cfg.test_fraction)
    if train.empty or test.empty or train[LABEL].nunique() < 2:
        raise TrainingDataError(
            f"{target.name}: not enough labelled rows ({len(frame)}: {len(train)} to train, "
            f"{len(test)} to test, {int(train[LABEL].sum()) if len(train) else 0} positive); "
            "both labels are needed on each side of the time split"
        )
    x_train = contract.assemble(train).matrix
    x_test = contract.assemble(test).matrix
    w_train = train[WEIGHT].to_numpy(dtype=np.float64)
    if (w_train == 1.0).all():
        w_train = None  # every row the same: the unweighted loss, as before weights existed
    progress("training set", 1, 1, f"{len(frame):,} rows")

    purchase = PURCHASE in frame.columns
    label_cols = [LABEL, PURCHASE] if purchase else [LABEL]
    groups = feature_groups(contract)
    columns = column_layout(contract, x_train.shape[1], vector_lengths(frame, contract))
    prep = fit_preprocessing(x_train, columns, groups, log_numeric=cfg.model.log_numeric)

    def fresh_model() -> Ranker:
        """The untrained model: the same initial weights every time (the seed)."""
        torch.manual_seed(cfg.seed)
        model = build_model(prep, cfg.model, len(label_cols))
        model.set_reference(torch.from_numpy(x_train))
        return model

    y_train = train[label_cols].to_numpy(dtype=np.float32)
    # Early stopping on the latest part of the training window: the test window stays unseen.
    n_fit = int(len(train) * (1.0 - cfg.valid_fraction))
    valid = (x_train[n_fit:], y_train[n_fit:]) if n_fit < len(train) else None
    w_fit = None if w_train is None else w_train[:n_fit]
    if cfg.stream or cfg.processes > 1:
        model, history, refit_epochs = fit_sharded(
            fresh_model, x_train, y_train, w_train, n_fit, cfg, on_progress
        )
    else:
        model, history = fit(
            fresh_model(), x_train[:n_fit], y_train[:n_fit], cfg, valid, on_progress, w_fit
        )
        refit_epochs = 0
        if cfg.refit and valid is not None:
            # The same model, fitted from scratch on every training row for the epochs picked.
            refit_epochs = best_epoch(history)
            refit_cfg = dataclasses.replace(cfg, epochs=refit_epochs)
            model, _ = fit(fresh_model(), x_train, y_train, refit_cfg, None, on_progress, w_train)

    progress("evaluate", 0, 1, "")
    report = evaluate(model, x_train, x_test, train, test, target, contract, cfg.seed)
    progress("evaluate", 1, 1, f"AUC {report['metrics']['auc']:.4f}")
    progress("export", 0, 1, "torchscript + parity")
    artifact, parity = export_torchscript(model, torch.from_numpy(x_test[:1000]))
    with torch.no_grad():
        baseline_logit = float(model.explain(torch.from_numpy(x_test[:1]))[2])
    digest = weights_digest(model, contract.schema_hash)

    model_dir = model_repository / target.name
    spec = model_spec(target, contract, purchase, x_train.shape[1])
    write_configs(model_dir, spec)
    versions = list_versions(model_dir)
    if versions and read_manifest(model_dir, versions[-1]).get("weights_digest") == digest:
        latest = read_manifest(model_dir, versions[-1])
        progress("export", 1, 1, f"unchanged (version {versions[-1]})")
        return TrainResult(target.name, versions[-1], False, latest["metrics"], latest)

    manifest: dict[str, Any] = {
        "target": target.name,
        "created_at": datetime.now(UTC).isoformat(),
        "code_version": _code_version(),
        "torch_version": torch.__version__,
        "weights_digest": digest,
        "parity_max_abs_diff": parity,
        "contract": contract.to_json(),
        "model": {
            "architecture": "DCN-v2 (parallel cross + deep), hashed categorical embeddings",
            "outputs": [name for name, _ in spec.outputs],
            "tasks": label_cols,
            "feature_groups": list(groups),
            "contrib_baseline_logit": baseline_logit,
            "columns": [dataclasses.asdict(c) for c in columns],
        },
        "training": {
            "config": cfg.to_dict(),
            "labels": str(labels),
            "sources": data.info,
            "data_digest": _digest(
                x_train,
                y_train,
                x_test,
                test[label_cols].to_numpy(),
                *([] if w_train is None else [w_train]),
            ),
            "train_window": _window(train),
            "test_window": _window(test),
            "train_rows": len(train),
            "test_rows": len(test),
            "train_positives": {c: int(train[c].sum()) for c in label_cols},
            "valid_rows": len(train) - n_fit,
            "epochs": history,
            # 0: the early-stopped model itself; else its epoch count, refitted on every row.
            "refit_epochs": refit_epochs,
            "fit_rows": len(train) if refit_epochs else n_fit,
            "seconds": round(time.monotonic() - started, 2),
            "reproduce": (
                f"scoring train --target {target.name} --epochs {cfg.epochs} "
                f"--seed {cfg.seed} --device {cfg.device}"
                + (f" --holdout {holdout}" if holdout != "none" else "")
                + (" --stream" if cfg.stream else "")
                + (f" --processes {cfg.processes}" if cfg.processes > 1 else "")
            ),
        },
        **report,
    }
    version = write_version(model_dir, artifact, manifest)
    progress("export", 1, 1, f"version {version}")
    return TrainResult(
        target.name, version, True, report["metrics"], {**manifest, "version": version}
    )
