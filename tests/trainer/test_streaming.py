"""Training at scale: shards round-trip the matrix, batches stay within their memory bound, and
streamed and 2-process (gloo) training reach the in-memory model's quality."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from scoring.core.targets import TARGETS
from scoring.trainer.distributed import fit_distributed
from scoring.trainer.layout import Column
from scoring.trainer.model import ModelConfig, Ranker, build_model, fit_preprocessing
from scoring.trainer.ranking_metrics import auc
from scoring.trainer.streaming import (
    Batch,
    BatchReader,
    ShardWriter,
    TrainingShards,
    batch_loss,
    fit_streamed,
    write_shards,
)
from scoring.trainer.train import TrainConfig, fit, train_target

COLUMNS = (
    Column("user__a", "user_behavior", False),
    Column("item__b", "item_popularity", False),
    Column("item__category", "item_popularity", True),
    Column("user__d", "user_behavior", False),
)
GROUPS = ("user_behavior", "item_popularity")


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows with a known click model (a numeric, a log-scaled one and a category effect)."""
    rng = np.random.default_rng(seed)
    x = np.stack(
        [
            rng.normal(size=n),
            rng.lognormal(1.0, 1.0, n),
            rng.integers(0, 12, n),
            rng.normal(size=n),
        ],
        1,
    ).astype(np.float32)
    logit = 1.5 * x[:, 0] - 0.5 * np.log1p(x[:, 1]) + 1.2 * (x[:, 2] % 3 == 0) - 1.0
    y = rng.uniform(size=n) < 1.0 / (1.0 + np.exp(-logit))
    return x, y.astype(np.float32)[:, None]


TRAIN = synthetic(12000, 0)
TEST = synthetic(3000, 1)
N_FIT = 10800


def fresh() -> Ranker:
    torch.manual_seed(7)
    x = TRAIN[0]
    model = build_model(fit_preprocessing(x, COLUMNS, GROUPS), ModelConfig(), 1)
    model.set_reference(torch.from_numpy(x))
    return model


def held_out_auc(model: Ranker) -> float:
    with torch.no_grad():
        probs = torch.sigmoid(model.logits(torch.from_numpy(TEST[0])))[:, 0].numpy()
    return auc(TEST[1][:, 0], probs)


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainingShards, TrainingShards]:
    root = tmp_path_factory.mktemp("shards")
    x, y = TRAIN
    fit_part = write_shards(root / "fit", x[:N_FIT], y[:N_FIT], row_group_rows=256)
    valid = write_shards(root / "valid", x[N_FIT:], y[N_FIT:], row_group_rows=256)
    return fit_part, valid


@pytest.fixture(scope="module")
def in_memory_auc() -> float:
    x, y = TRAIN
    model, _ = fit(fresh(), x[:N_FIT], y[:N_FIT], TrainConfig(epochs=4), (x[N_FIT:], y[N_FIT:]))
    return held_out_auc(model)


def test_shards_round_trip_the_exact_matrix(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1000, 7)).astype(np.float32)
    x[::17, 2] = np.nan  # missing values stay missing
    y = (rng.uniform(size=(1000, 2)) < 0.3).astype(np.float32)
    w = rng.uniform(0.1, 3.0, 1000)
    writer = ShardWriter(tmp_path / "s", 7, 2, True, row_group_rows=128, groups_per_file=3)
    for start, end in ((0, 5), (5, 400), (400, 401), (401, 1000)):  # uneven chunks
        writer.write(x[start:end], y[start:end], w[start:end])
    shards = writer.close()
    assert (shards.rows, shards.width, shards.tasks, shards.weighted) == (1000, 7, 2, True)
    assert len(shards.files) == 3  # 8 row groups, 3 a file
    assert [u[2] for u in shards.units()] == [128] * 7 + [104]
    rx, ry, rw = TrainingShards.open(tmp_path / "s").read_all()
    assert rx.tobytes() == x.tobytes() and ry.tobytes() == y.tobytes()
    assert rw is not None and rw.tobytes() == w.tobytes()
    with pytest.raises(ValueError, match="weights given"):
        ShardWriter(tmp_path / "t", 7, 2, True).write(x, y)


def test_batches_cover_every_row_once_within_the_memory_bound(tmp_path: Path) -> None:
    n = 5000
    x = np.arange(n, dtype=np.float32)[:, None]  # the row id as the only feature
    shards = write_shards(tmp_path / "s", x, np.zeros((n, 1), np.float32), row_group_rows=128)
    reader = BatchReader([shards], batch_size=64, seed=5, buffer_groups=2)
    seen = [b.x[:, 0] for b in reader.epoch(0)]
    assert all(len(b) == 64 for b in seen[:-1])
    ids = np.concatenate(seen)
    assert np.array_equal(np.sort(ids), x[:, 0])  # every row once
    assert 0 < reader.max_buffered_rows <= 2 * 128 + 64  # never the whole matrix
    # Shuffled: not in file order, and a batch mixes the row groups of its window.
    assert not np.array_equal(ids, x[:, 0])
    assert len(set((seen[0] // 128).tolist())) == 2
    again = BatchReader([shards], batch_size=64, seed=5, buffer_groups=2)
    assert np.array_equal(np.concatenate([b.x[:, 0] for b in again.epoch(0)]), ids)  # seeded
    assert not np.array_equal(np.concatenate([b.x[:, 0] for b in again.epoch(1)]), ids)


def test_ranks_read_disjoint_row_groups_in_step(tmp_path: Path) -> None:
    n = 3000
    x = np.arange(n, dtype=np.float32)[:, None]
    shards = write_shards(tmp_path / "s", x, np.zeros((n, 1), np.float32), row_group_rows=100)
    readers = [BatchReader([shards], 50, seed=1, rank=r, world=2) for r in range(2)]
    batches = [list(r.epoch(0)) for r in readers]
    assert len(batches[0]) == len(batches[1]) == readers[0].batches_per_epoch(0)
    ids = [set(np.concatenate([b.x[:, 0] for b in bs]).tolist()) for bs in batches]
    assert not ids[0] & ids[1]
    assert len(ids[0] | ids[1]) == n  # 30 groups of 100: 15 a rank, nothing dropped
    with pytest.raises(ValueError, match="row groups for 4 processes"):
        BatchReader(
            [write_shards(tmp_path / "t", x[:250], x[:250], row_group_rows=100)], 50, 1, world=4
        )


def test_row_weights_weigh_a_batchs_loss() -> None:
    rng = np.random.default_rng(2)
    logits = torch.from_numpy(rng.normal(size=(8, 2)).astype(np.float32))
    y = (rng.uniform(size=(8, 2)) < 0.5).astype(np.float32)
    x = np.zeros((8, 1), np.float32)
    tasks = torch.tensor([1.0, 0.5])
    cpu = torch.device("cpu")
    plain, _ = batch_loss(logits, Batch(x, y, None), tasks, cpu)
    ones, _ = batch_loss(logits, Batch(x, y, np.ones(8)), tasks, cpu)
    assert torch.allclose(plain, ones)
    half = np.r_[np.ones(4), np.zeros(4)]  # weight 0: the row does not count
    weighted, _ = batch_loss(logits, Batch(x, y, half), tasks, cpu)
    first, _ = batch_loss(logits[:4], Batch(x[:4], y[:4], None), tasks, cpu)
    assert torch.allclose(weighted, first)


def test_streamed_training_reaches_the_in_memory_quality(
    shards: tuple[TrainingShards, TrainingShards], in_memory_auc: float
) -> None:
    fit_part, valid = shards
    model, history = fit_streamed(fresh(), [fit_part], TrainConfig(epochs=4), [valid])
    assert len(history) >= 2 and all(np.isfinite(h["valid_logloss"]) for h in history)
    assert in_memory_auc > 0.75  # the data has signal to learn
    assert abs(held_out_auc(model) - in_memory_auc) < 0.015


def test_two_process_training_matches_quality_with_ranks_in_step(
    shards: tuple[TrainingShards, TrainingShards], in_memory_auc: float
) -> None:
    fit_part, valid = shards
    cfg = TrainConfig(epochs=4, stream=True, processes=2)
    model, history, digests = fit_distributed(fresh(), [fit_part], cfg, [valid])
    assert len(digests) == 2 and digests[0] == digests[1]  # both ranks end with equal weights
    assert len(history) >= 2 and all(np.isfinite(h["valid_logloss"]) for h in history)
    assert abs(held_out_auc(model) - in_memory_auc) < 0.02


def test_train_target_streams_and_records_it(feature_repo_ready: Any, tmp_path: Path) -> None:
    target = TARGETS["activity_ranker"]
    store = feature_repo_ready.store()
    base = train_target(
        store, target, feature_repo_ready.path, tmp_path / "a", TrainConfig(epochs=3)
    )
    # One process here: the 2-process path is the test above (each spawn costs seconds).
    cfg = TrainConfig(epochs=3, stream=True)
    streamed = train_target(store, target, feature_repo_ready.path, tmp_path / "b", cfg)
    training = streamed.manifest["training"]
    assert training["config"]["stream"] is True and training["config"]["processes"] == 1
    assert training["reproduce"].endswith(" --stream")
    assert TrainConfig.from_dict(training["config"]) == cfg
    assert training["data_digest"] == base.manifest["training"]["data_digest"]
    assert abs(streamed.metrics["auc"] - base.metrics["auc"]) < 0.03


def test_cli_passes_stream_and_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    import scoring.cli.train as cli_train
    from scoring.cli import app

    seen: list[TrainConfig] = []
    monkeypatch.setattr(cli_train, "train_and_show", lambda _s, _n, cfg, *a, **k: seen.append(cfg))
    runner = CliRunner()
    assert runner.invoke(app, ["train", "--processes", "2"]).exit_code == 0
    assert runner.invoke(app, ["train", "--stream"]).exit_code == 0
    assert runner.invoke(app, ["train"]).exit_code == 0
    assert [(c.stream, c.processes) for c in seen] == [(True, 2), (True, 1), (False, 1)]
    assert runner.invoke(app, ["train", "--processes", "0"]).exit_code == 2
