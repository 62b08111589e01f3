"""`scoring models ...` and `scoring experiments report` as MLOps run them (registry only: the
Triton side of a promotion is tests/e2e/test_promotion.py)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from scoring.cli import app
from scoring.core.targets import TARGETS
from scoring.registry import Registry, Stage


def test_models_commands_end_to_end(tmp_path: Path, models_env: dict[str, str]) -> None:
    url = models_env["SCORING_REGISTRY__URL"]
    env = {
        **models_env,
        "SCORING_GATEWAY__EVENTS_DIR": str(tmp_path / "events"),
        "SCORING_ACTOR": "ops@test",
    }
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == code, result.output
        return result.output

    listed = run("models", "list")
    assert "item_ranker" in listed and "activity_ranker" in listed and "registered" in listed

    out = run("models", "promote", "item_ranker", "1", "--registry-only", "--reason", "first")
    assert "item_ranker v1 registered -> production" in out
    assert "refused: item_ranker v1 is already in production" in run(
        "models", "promote", "item_ranker", "1", "--registry-only", code=1
    )
    assert "refused" in run("models", "rollback", "item_ranker", "--registry-only", code=1)
    assert "unknown target 'nope'" in run("models", "list", "--target", "nope", code=2)

    out = run("models", "bootstrap")
    assert "activity_ranker v1 registered -> production" in out
    assert "item_ranker: v1 is in production" in out

    compared = run("models", "compare", "item_ranker", "1", "1")
    assert "auc" in compared and "ndcg@10" in compared and "ok" in compared

    history = run("models", "history", "--target", "item_ranker")
    assert "registered -> production" in history and "ops@test" in history and "first" in history

    assert "no served requests" in run("experiments", "report", code=1)

    with Registry(url) as registry:
        stages = {r.target: r.stage for r in registry.versions()}
    assert stages == dict.fromkeys(TARGETS, Stage.PRODUCTION)
