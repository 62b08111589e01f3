"""The checks a workflow makes before it starts, and the demo's choice of candidates."""

from __future__ import annotations

from pathlib import Path

import pytest

from scoring import workflows
from scoring.core.settings import FeastSettings, Settings, TritonSettings
from scoring.core.targets import TARGETS


def test_targets_default_to_all_and_unknown_ones_are_named() -> None:
    assert workflows.check_targets(None) == list(TARGETS)
    assert workflows.check_targets(["activity_ranker"]) == ["activity_ranker"]
    with pytest.raises(workflows.WorkflowError, match=r"unknown target\(s\) \['nope'\]"):
        workflows.check_targets(["item_ranker", "nope"])
    with pytest.raises(workflows.WorkflowError, match="unknown target 'nope'; known: "):
        workflows.check_target("nope")


def test_a_device_this_machine_cannot_use_is_refused_by_option() -> None:
    import torch

    workflows.check_device("cpu")
    with pytest.raises(workflows.WorkflowError, match="not a torch device") as bad:
        workflows.check_device("gpu0")
    assert bad.value.option == "--device"
    if not torch.cuda.is_available():
        with pytest.raises(workflows.WorkflowError, match="no CUDA device here"):
            workflows.check_device("cuda")


def test_the_trained_version_is_the_latest_or_the_one_asked_for(tmp_path: Path) -> None:
    settings = Settings(triton=TritonSettings(model_repository=tmp_path))
    with pytest.raises(workflows.WorkflowError, match="no trained version .*scoring train"):
        workflows.trained_version(settings, "item_ranker")
    for version in ("1", "3", "configs"):
        (tmp_path / "item_ranker" / version).mkdir(parents=True)
    latest = workflows.trained_version(settings, "item_ranker")
    assert (latest.version, latest.model_dir) == (3, tmp_path / "item_ranker")
    assert workflows.trained_version(settings, "item_ranker", 1).version == 1
    with pytest.raises(workflows.WorkflowError, match=r"no version 2 \(have \[1, 3\]\)"):
        workflows.trained_version(settings, "item_ranker", 2)
    with pytest.raises(workflows.WorkflowError, match="unknown target"):
        workflows.trained_version(settings, "nope")


def test_the_demo_sizes_its_data_from_the_user_count() -> None:
    small, large = workflows.demo_data_config(150), workflows.demo_data_config(4000)
    assert (small.n_users, small.n_items, small.n_activities) == (150, 75, 20)
    assert (large.n_items, large.n_activities, large.n_item_impressions) == (2000, 250, 160_000)
    assert workflows.demo_items(75) == [f"i_{i:06d}" for i in range(0, 60, 3)]
    assert workflows.demo_items(10) == [f"i_{i:06d}" for i in range(20)]


def test_a_folder_without_a_feature_repository_is_named(tmp_path: Path) -> None:
    from scoring.trainer.train import TrainConfig

    settings = Settings(feast=FeastSettings(repo_path=tmp_path / "features"))
    with pytest.raises(workflows.WorkflowError, match="no feature repository: .*feature_store"):
        workflows.open_feature_store(settings)
    with pytest.raises(workflows.WorkflowError, match="SCORING_FEAST__REPO_PATH"):
        workflows.train_and_register(settings, None, TrainConfig(epochs=1))
