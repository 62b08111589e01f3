"""Checks a workflow makes before it starts: targets, torch device, a trained version."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scoring.core.settings import Settings
from scoring.core.targets import TARGETS


class WorkflowError(ValueError):
    """A workflow refused its input; the message names what is wrong and what to do.

    Attributes:
        option: the command-line option the input came from, where there is one.
    """

    def __init__(self, message: str, option: str | None = None) -> None:
        super().__init__(message)
        self.option = option


# --- checks ----------------------------------------------------------------------------------


def check_target(name: str) -> str:
    """`name` if it is a model target."""
    if name not in TARGETS:
        raise WorkflowError(f"unknown target {name!r}; known: {sorted(TARGETS)}")
    return name


def check_targets(names: Sequence[str] | None) -> list[str]:
    """The targets asked for (every target when none is named)."""
    chosen = list(names or TARGETS)
    unknown = [n for n in chosen if n not in TARGETS]
    if unknown:
        raise WorkflowError(f"unknown target(s) {unknown}; known: {sorted(TARGETS)}")
    return chosen


def check_device(device: str) -> None:
    """Refuses a torch device this machine cannot train on, before any data is read."""
    import torch

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError) as exc:
        raise WorkflowError(f"{device!r} is not a torch device ({exc})", "--device") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise WorkflowError(
            f"{device!r}: no CUDA device here (torch {torch.__version__}, "
            f"torch.cuda.is_available() is False); use --device cpu",
            "--device",
        )


@dataclass(frozen=True, slots=True)
class TrainedVersion:
    """A version the trainer wrote into the model repository."""

    target: str
    version: int
    model_dir: Path


def trained_version(settings: Settings, target: str, version: int | None = None) -> TrainedVersion:
    """A target's trained version as asked for (the latest by default)."""
    from scoring.trainer.export import list_versions

    model_dir = settings.triton.model_repository / check_target(target)
    versions = list_versions(model_dir)
    if not versions or (version is not None and version not in versions):
        wanted = "no trained version" if version is None else f"no version {version}"
        raise WorkflowError(f"{wanted} (have {versions}) in {model_dir}; `scoring train`")
    return TrainedVersion(target, versions[-1] if version is None else version, model_dir)


def open_feature_store(settings: Settings) -> Any:
    """The configured `feast.FeatureStore`; refuses a folder without a feature repository."""
    from scoring.core.feature_repo import open_store

    feast = settings.feast
    definition = feast.fs_yaml or feast.repo_path / "feature_store.yaml"
    if not Path(definition).is_file():
        raise WorkflowError(
            f"no feature repository: {definition} not found; run from the project folder or "
            "set SCORING_FEAST__REPO_PATH (and SCORING_FEAST__FS_YAML)"
        )
    return open_store(feast.repo_path, feast.fs_yaml)
