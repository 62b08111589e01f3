"""Registry changes need an admin identity: `scoring models promote|canary|shadow|stop|rollback|
bootstrap` with auth required refuse without an admin caller's token and write nothing; with
one, the audit trail records that caller. With auth off, changes are marked unauthenticated."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from scoring.cli import app
from scoring.core.access import token_sha256
from scoring.registry import Registry, Stage

ADMIN, WEB = "admin-token-for-the-test", "web-token-for-the-test"
CALLERS = [
    {"name": "ops-alice", "token_sha256": [token_sha256(ADMIN)], "roles": ["admin"]},
    {"name": "web", "token_sha256": [token_sha256(WEB)], "rpcs": ["Rank"]},
]


def test_registry_changes_need_an_admin_token_when_auth_is_required(
    models_env: dict[str, str],
) -> None:
    url = models_env["SCORING_REGISTRY__URL"]
    base = {
        **models_env,
        "SCORING_ACTOR": "claimed-name",
        "SCORING_AUTH__CALLERS": json.dumps(CALLERS),
    }
    required = {**base, "SCORING_AUTH__REQUIRED": "true"}
    runner = CliRunner()

    def run(env: dict[str, str], *args: str, code: int = 0) -> str:
        result = runner.invoke(app, list(args), env=env)
        assert result.exit_code == code, result.output
        return " ".join(result.output.split())  # unwrapped

    def history() -> list[tuple[str, Stage, str]]:
        with Registry(url) as registry:
            return [(e.target, e.to_stage, e.actor) for e in registry.history()]

    registered = history()
    promote = ("models", "promote", "item_ranker", "1", "--registry-only", "--reason", "go")

    out = run(required, *promote, code=2)
    assert "need an admin identity" in out and "nothing was changed" in out
    out = run(required, *promote, "--token", WEB, code=2)
    assert "'web' has no 'admin' role" in out
    out = run(required, *promote, "--token", "forged", code=2)
    assert "matches no caller" in out
    for change in (
        ("canary", "item_ranker", "1", "--percent", "10", "--registry-only"),
        ("shadow", "item_ranker", "1", "--registry-only"),
        ("stop", "item_ranker", "1", "--registry-only"),
        ("rollback", "item_ranker", "--registry-only"),
        ("bootstrap",),
    ):
        assert "need an admin identity" in run(required, "models", *change, code=2)
    # A name on the command line no longer claims an identity.
    assert "No such option" in run(required, *promote, "--actor", "ops-alice", code=2)
    assert history() == registered, "a refused change wrote nothing"

    # The admin's token (here from the environment): the audit trail records that caller.
    out = run({**required, "SCORING_AUTH__ADMIN_TOKEN": ADMIN}, *promote)
    assert "item_ranker v1 registered -> production" in out
    with Registry(url) as registry:
        event = registry.history("item_ranker")[-1]
    assert (event.to_stage, event.actor) == (Stage.PRODUCTION, "ops-alice")
    assert event.details is not None
    assert event.details["auth"] == {"identity": "ops-alice", "authenticated_by": "token"}
    assert "ops-alice" in run(required, "models", "history", "--target", "item_ranker")

    # Auth off (the local default): allowed, and recorded as not authenticated.
    run(base, "models", "bootstrap")
    with Registry(url) as registry:
        event = registry.history("activity_ranker")[-1]
    assert event.to_stage == Stage.PRODUCTION
    assert event.actor == "local:claimed-name (auth off)"
    assert event.details is not None
    assert event.details["auth"]["authenticated_by"] == "none"
