"""The ranking model: raw features in, vocabularies and hashing baked in, exact contributions."""

from __future__ import annotations

import io
from typing import Any, cast

import numpy as np
import pytest
import torch

from scoring.trainer.layout import Column
from scoring.trainer.model import (
    ModelConfig,
    MultiTaskRanker,
    Ranker,
    build_model,
    fit_preprocessing,
)

COLUMNS = (
    Column("user__ctr", "user_behavior", False),
    Column("item__sales", "item_popularity", False),
    Column("item__category", "item_popularity", True),
    Column("item__price", "price", False),
    Column("user__level", "user_profile", True),
)
GROUPS = ("user_behavior", "user_profile", "item_popularity", "price")


def rows(n: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack(
        [
            rng.uniform(0, 0.2, n),
            rng.lognormal(2.0, 1.5, n),  # heavy-tailed: log1p
            rng.integers(0, 12, n),
            rng.lognormal(3.5, 0.8, n),
            rng.integers(0, 3, n),
        ],
        1,
    ).astype(np.float32)


def model(tasks: int = 1) -> Ranker:
    torch.manual_seed(0)
    x = rows()
    m = build_model(fit_preprocessing(x, COLUMNS, GROUPS), ModelConfig(), tasks)
    m.set_reference(torch.from_numpy(x))
    return m.eval()


def scripted(m: torch.nn.Module) -> torch.jit.ScriptModule:
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(m), buffer)
    return torch.jit.load(io.BytesIO(buffer.getvalue()))


def test_preprocessing_is_fitted_on_training_rows() -> None:
    prep = fit_preprocessing(rows(), COLUMNS, GROUPS)
    assert list(prep.numeric) == [0, 1, 3] and list(prep.categorical) == [2, 4]
    assert list(prep.log1p) == [True, True, True], "no negative values: log1p"
    skewed = fit_preprocessing(rows(), COLUMNS, GROUPS, log_numeric="skewed")
    assert list(skewed.log1p) == [False, True, True], "heavy-tailed, non-negative: log1p"
    signed = rows()
    signed[0, 1] = -1.0  # one negative value: left linear under either rule
    assert not fit_preprocessing(signed, COLUMNS, GROUPS).log1p[1]
    with pytest.raises(ValueError, match="log_numeric"):
        fit_preprocessing(rows(), COLUMNS, GROUPS, log_numeric="always")
    assert [list(v) for v in prep.vocabs] == [list(range(12)), [0, 1, 2]]
    assert [GROUPS[g] for g in prep.categorical_group] == ["item_popularity", "user_profile"]


def test_outputs_scripted_equal_eager() -> None:
    for tasks, outputs in ((1, 2), (2, 3)):
        m = model(tasks)
        x = torch.from_numpy(rows(64, seed=1))
        eager, script = m(x), scripted(m)(x)
        assert len(eager) == len(script) == outputs
        assert eager[0].shape == (64, 1) and eager[1].shape == (64, len(GROUPS))
        for a, b in zip(eager, script, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert isinstance(model(2), MultiTaskRanker)


def test_contributions_sum_to_the_click_logit() -> None:
    m = model()
    x = torch.from_numpy(rows(256, seed=2))
    with torch.no_grad():
        logits, contrib, base = m.explain(x)
        score, served = m(x)
    torch.testing.assert_close(contrib.sum(1) + base, logits[:, 0], rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.logit(score[:, 0].double()).float(), logits[:, 0])
    assert torch.equal(served, contrib)
    assert (contrib.abs().mean(0) > 0).all(), "every group moves the logit somewhere"


def test_unchanged_groups_get_no_contribution_in_an_additive_case() -> None:
    m = model()
    with torch.no_grad():  # no cross/deep interaction: the head reads x0 linearly
        for layer in cast(Any, m.cross):
            layer.up.weight.zero_()
            layer.up.bias.zero_()
        m.head.weight[:, len(m.num_mean) + 2 * 8 :] = 0.0
    x = torch.from_numpy(rows(32, seed=3))
    price_only = x.clone()
    price_only[:, 3] *= 2.0
    with torch.no_grad():
        delta = m.explain(price_only)[1] - m.explain(x)[1]
    moved = delta.abs().amax(0)
    assert moved[GROUPS.index("price")] > 0
    assert moved[[GROUPS.index(g) for g in GROUPS if g != "price"]].max() < 1e-6


def test_unseen_categories_hash_to_trained_buckets_deterministically() -> None:
    m = model()
    known = torch.from_numpy(rows(4, seed=4))
    unseen = known.clone()
    unseen[:, 2] = torch.tensor([1234.0, 99_999.0, -7.0, 1234.0])
    rows_known, rows_unseen = m._rows(known), m._rows(unseen)
    vocab_size = m.vocab_sizes[0]
    assert (rows_known[:, 0] < vocab_size).all()
    assert ((rows_unseen[:, 0] >= vocab_size) & (rows_unseen[:, 0] < vocab_size + 16)).all()
    assert rows_unseen[0, 0] == rows_unseen[3, 0], "same value, same bucket"
    score = scripted(m)(unseen)[0]
    assert torch.isfinite(score).all()


def test_raw_values_go_in_normalisation_is_inside() -> None:
    m = model()
    x = torch.from_numpy(rows(8, seed=5))
    x0, reference = m.represent(x)
    assert x0.shape[1] == reference.shape[0] == 3 + 2 * 8
    assert torch.allclose(reference[:3], torch.zeros(3)), "numeric reference = training mean"
    assert x0[:, :3].abs().max() < 8.0 + 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_runs_on_cuda() -> None:
    m = model().cuda()
    out = m(torch.from_numpy(rows(16)).cuda())
    assert out[0].is_cuda and out[1].shape == (16, len(GROUPS))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_fits_on_cuda_and_hands_back_a_cpu_model() -> None:
    from scoring.trainer.train import TrainConfig, fit

    x = rows(256, seed=11)
    y = (np.random.default_rng(11).uniform(size=(256, 1)) < 0.3).astype(np.float32)
    fitted, history = fit(model(), x, y, TrainConfig(epochs=2, device="cuda"), (x[:64], y[:64]))
    assert all(np.isfinite(h["valid_logloss"]) for h in history)
    assert all(p.device.type == "cpu" for p in fitted.parameters())
    assert fitted(torch.from_numpy(x[:4]))[0].shape == (4, 1)


def test_train_refuses_a_device_it_cannot_use_before_reading_data() -> None:
    from typer.testing import CliRunner

    from scoring.cli import app

    runner = CliRunner()
    bad = runner.invoke(app, ["train", "--device", "gpu0"])
    assert bad.exit_code == 2 and "--device" in bad.output and "gpu0" in bad.output
    if not torch.cuda.is_available():
        cuda = runner.invoke(app, ["train", "--device", "cuda"])
        assert cuda.exit_code == 2 and "no CUDA device here" in " ".join(cuda.output.split())


def test_a_manifest_config_replays_its_preprocessing_rule() -> None:
    from scoring.trainer.train import TrainConfig

    raw = TrainConfig().to_dict()
    assert TrainConfig.from_dict(raw) == TrainConfig()
    del raw["model"]["log_numeric"]  # a version trained before the rule was recorded
    assert TrainConfig.from_dict(raw).model.log_numeric == "skewed"
    del raw["refit"]  # and before the refit on every training row
    assert TrainConfig.from_dict(raw).refit is False
