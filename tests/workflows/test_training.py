"""Train and register, bootstrap and materialize as the CLI, the benchmark and the console run
them: real Feast (the session's SQLite repo), a real SQLite model registry."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from scoring import workflows
from scoring.core.settings import FeastSettings, RegistrySettings, Settings, TritonSettings
from scoring.core.targets import TARGETS
from scoring.registry import Registry, Stage
from scoring.registry.promotion import register_version
from scoring.trainer.export import read_manifest

from ..conftest import FeatureRepo


def settings_for(tmp_path: Path, repo: Path, models: Path) -> Settings:
    return Settings(
        feast=FeastSettings(repo_path=repo),
        triton=TritonSettings(model_repository=models),
        registry=RegistrySettings(url=f"sqlite:///{tmp_path / 'registry.db'}"),
    )


def test_train_and_register_records_each_version_once(
    tmp_path: Path, feature_repo_ready: FeatureRepo
) -> None:
    from scoring.trainer.train import TrainConfig

    settings = settings_for(tmp_path, feature_repo_ready.path, tmp_path / "models")
    steps: list[tuple[str, str]] = []

    def on_progress(target: str, stage: str, done: int, total: int, note: str) -> None:
        steps.append((target, stage))

    cfg = TrainConfig(epochs=1)
    (first,) = workflows.train_and_register(
        settings, ["item_ranker"], cfg, actor="test", on_progress=on_progress
    )
    assert (first.target, first.version, first.created) == ("item_ranker", 1, True)
    assert first.metrics["auc"] == first.manifest["metrics"]["auc"]
    assert {stage for _, stage in steps} >= {"training set", "fit", "evaluate", "export"}
    assert {target for target, _ in steps} == {"item_ranker"}
    with Registry(settings.registry.url) as registry:
        (record,) = registry.versions()
    assert (record.target, record.version, record.stage) == ("item_ranker", 1, Stage.REGISTERED)
    assert record.created_by == "test" and record.metrics["auc"] == first.metrics["auc"]

    # Same data, same config: the version is kept, and registered once.
    (again,) = workflows.train_and_register(settings, ["item_ranker"], cfg)
    assert (again.version, again.created) == (1, False)
    with Registry(settings.registry.url) as registry:
        assert [(r.version, r.created_by) for r in registry.versions()] == [(1, "test")]

    with pytest.raises(workflows.WorkflowError, match="unknown target"):
        workflows.train_and_register(settings, ["nope"], cfg)


def test_bootstrap_promotes_where_nothing_is_in_production(
    tmp_path: Path, feature_repo_ready: FeatureRepo, model_repository: Path
) -> None:
    models = tmp_path / "models"
    shutil.copytree(model_repository, models)
    settings = settings_for(tmp_path, feature_repo_ready.path, models)
    manifest = read_manifest(models / "item_ranker", 1)
    said: list[str] = []
    with Registry(settings.registry.url) as registry:
        register_version(registry, models, "item_ranker", 1, manifest, "trainer")

        def run(newest: bool = False) -> dict[str, tuple[str, int | None]]:
            seen: list[workflows.BootstrapOutcome] = []
            outcomes = workflows.bootstrap(
                settings, registry, "ops", newest=newest, say=said.append, on_outcome=seen.append
            )
            assert seen == outcomes  # each one as soon as it is known
            return {o.target: (o.status, o.version) for o in outcomes}

        # Every target is reported; only item_ranker has a registered version.
        assert run() == {
            name: ("promoted", 1) if name == "item_ranker" else ("no version", None)
            for name in TARGETS
        }
        assert any("item_ranker v1 registered -> production" in line for line in said)
        assert run()["item_ranker"] == ("in production", 1)
        assert registry.history("item_ranker")[-1].actor == "ops"

        # A newer version: bootstrap leaves production alone, unless told to take the newest.
        shutil.copytree(models / "item_ranker" / "1", models / "item_ranker" / "2")
        register_version(registry, models, "item_ranker", 2, manifest, "trainer")
        assert run()["item_ranker"] == ("in production", 1)
        assert run(newest=True)["item_ranker"] == ("promoted", 2)
        production = registry.routing().targets["item_ranker"].production
        assert production is not None and production.version == 2


def test_materialize_keeps_feasts_output_off_the_terminal(
    tmp_path: Path, feature_repo_ready: FeatureRepo, capfd: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "features"
    shutil.copytree(feature_repo_ready.path, repo, ignore=shutil.ignore_patterns("__pycache__"))
    settings = settings_for(tmp_path, repo, tmp_path / "models")
    capfd.readouterr()
    end = workflows.materialize_features(settings, full=True)
    out, err = capfd.readouterr()
    assert end.tzinfo is not None
    assert out == "" and err == ""
