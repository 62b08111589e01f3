"""A registry with v1 of every target registered, for the `scoring models ...` commands."""

from __future__ import annotations

from pathlib import Path

import pytest

from scoring.core.targets import TARGETS
from scoring.registry import Registry
from scoring.registry.promotion import register_version
from scoring.trainer.export import read_manifest

from ..conftest import FeatureRepo


@pytest.fixture
def models_env(
    tmp_path: Path, feature_repo_ready: FeatureRepo, model_repository: Path
) -> dict[str, str]:
    """The environment of a CLI run on a fresh registry (in `tmp_path`) holding v1 of every
    target, registered by "trainer"."""
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    with Registry(url) as registry:
        for name in TARGETS:
            manifest = read_manifest(model_repository / name, 1)
            register_version(registry, model_repository, name, 1, manifest, "trainer")
    return {
        "SCORING_REGISTRY__URL": url,
        "SCORING_FEAST__REPO_PATH": str(feature_repo_ready.path),
        "SCORING_TRITON__MODEL_REPOSITORY": str(model_repository),
    }
