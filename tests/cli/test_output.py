"""What a user sees from `scoring`: the platform's output only, no library warnings or colours
(Feast's materialize lines, torch's TorchScript deprecations), as the installed command runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from scoring.registry import Registry, Stage

from ..conftest import FeatureRepo


def test_materialize_and_train_print_only_the_platforms_output(
    tmp_path: Path, feature_repo_ready: FeatureRepo
) -> None:
    repo = tmp_path / "features"
    shutil.copytree(feature_repo_ready.path, repo, ignore=shutil.ignore_patterns("__pycache__"))
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    env = {
        **os.environ,
        "SCORING_FEAST__REPO_PATH": str(repo),
        "SCORING_TRITON__MODEL_REPOSITORY": str(tmp_path / "models"),
        "SCORING_REGISTRY__URL": url,
    }
    scoring = str(Path(sys.executable).with_name("scoring"))

    def run(*args: str) -> str:
        result = subprocess.run(
            [scoring, *args], env=env, capture_output=True, text=True, timeout=600
        )
        printed = result.stdout + result.stderr
        assert result.returncode == 0, printed[-3000:]
        assert "\x1b[" not in printed, f"an ANSI escape in `scoring {' '.join(args)}`"
        assert "deprecated" not in printed.lower(), printed[-3000:]
        return printed

    assert "materialized up to" in run("features", "materialize", "--full")
    trained = run("train", "--target", "item_ranker", "--epochs", "1", "--no-report")
    assert "trained models" in trained and "scoring models promote" in trained
    with Registry(url) as registry:  # the CLI's train registers what it trained
        assert [(r.target, r.version, r.stage) for r in registry.versions()] == [
            ("item_ranker", 1, Stage.REGISTERED)
        ]
