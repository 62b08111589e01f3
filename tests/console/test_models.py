"""The Models area's JSON API and forms on a real SQLite registry: reading, the plan and gates
before a change, the login, and bad input on every route answered with a status and a message
naming the field, changing nothing. (Changes that reach Triton and a gateway:
test_browser.py.)"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from scoring.console import create_app
from scoring.core.access import new_token, token_sha256
from scoring.core.settings import CallerSettings, Settings
from scoring.registry import Registry, Stage

TARGET = "item_ranker"
ADMIN_TOKEN = new_token()
VIEWER_TOKEN = new_token()


def _register(registry: Registry, root: Path, version: int, auc: float) -> None:
    artifact = root / TARGET / str(version) / "model.pt"
    artifact.parent.mkdir(parents=True)
    artifact.write_bytes(f"weights {version}".encode())
    registry.register(
        TARGET,
        version,
        artifact_path=str(artifact),
        checksum=hashlib.sha256(artifact.read_bytes()).hexdigest(),
        feature_service="item_ranker_v1",
        schema_hash="a" * 16,
        train_start="2026-01-01",
        train_end="2026-02-01",
        metrics={"auc": auc, "ndcg@10": 0.5, "logloss": 0.4, "undefined": float("nan")},
        manifest={
            "evaluation": {"table": {"model": {"auc": auc}, "popularity": {"auc": 0.6}}},
            "contract": {"features": [{"ref": "item_stats:ctr_7d", "dtype": "Float32"}]},
        },
        actor="trainer",
    )


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[TestClient, Registry]]:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    registry = Registry(url)
    _register(registry, tmp_path / "models", 1, 0.75)
    _register(registry, tmp_path / "models", 2, 0.70)
    registry.set_stage(TARGET, 1, Stage.PRODUCTION, actor="bootstrap", reason="first")
    settings = Settings(
        registry={"url": url},  # type: ignore[arg-type]
        triton={"model_repository": tmp_path / "models"},  # type: ignore[arg-type]
        feast={"repo_path": tmp_path / "no-feature-repo"},  # type: ignore[arg-type]
        auth={  # type: ignore[arg-type]
            "callers": [
                CallerSettings(
                    name="mlops", token_sha256=(token_sha256(ADMIN_TOKEN),), roles=("admin",)
                ),
                CallerSettings(name="frontend", token_sha256=(token_sha256(VIEWER_TOKEN),)),
            ]
        },
    )
    with TestClient(create_app(settings)) as client:
        yield client, registry
    registry.close()


def _error(response: Any, status: int, field: str | None) -> str:
    """The error's message; it starts with the field it names (a gate's refusal, 409, names
    the version in its own words)."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field, body
    assert not field or status == 409 or body["error"].startswith(field), body
    return str(body["error"])


def test_models_versions_comparison_and_history(setup: tuple[TestClient, Registry]) -> None:
    client, _ = setup
    targets = {t["target"]: t for t in client.get("/api/v1/models").json()}
    assert targets[TARGET]["production"] == 1
    assert [v["version"] for v in targets[TARGET]["versions"]] == [2, 1]
    assert targets["activity_ranker"]["versions"] == []

    detail = client.get(f"/api/v1/models/{TARGET}/versions/2").json()
    assert detail["evaluation"]["popularity"]["auc"] == 0.6
    assert detail["features"][0]["ref"] == "item_stats:ctr_7d"
    assert set(detail["actions"]) == {"promote", "canary", "shadow"}

    compared = client.get(f"/api/v1/models/{TARGET}/compare?v=1&v=2").json()
    auc = next(r for r in compared["metrics"] if r["metric"] == "auc")
    assert auc["values"] == [0.75, 0.70] and auc["gated"]
    assert auc["deltas"][1] == pytest.approx(-0.05)
    page = client.get(f"/models/{TARGET}/compare?v=1&v=2")
    assert page.status_code == 200 and page.text.count("<svg") >= 2

    history = client.get("/api/v1/history", params={"target": TARGET}).json()
    assert [(e["version"], e["to_stage"]) for e in history][0] == (1, "production")
    for path in ("/models", f"/models/{TARGET}/v1", "/history", f"/models/{TARGET}/v2/promote"):
        assert client.get(path).status_code == 200, path


def test_the_plan_shows_the_change_and_every_gate_before_anything_changes(
    setup: tuple[TestClient, Registry],
) -> None:
    client, registry = setup
    revision = registry.revision()
    plan = client.get(
        f"/api/v1/models/{TARGET}/versions/2/plan", params={"action": "canary", "percent": 25}
    ).json()
    assert plan["before"]["canary"] == "-" and plan["after"]["canary"] == "v2 (25%)"
    gates = {g["gate"]: g for g in plan["gates"]}
    assert gates["artifact"]["passed"]
    # No feature repository: the schema gate cannot confirm the live schema and refuses.
    assert not gates["schema"]["passed"] and not gates["schema"]["overridable"]
    assert not gates["metric auc"]["passed"] and gates["metric auc"]["overridable"]
    assert plan["blocked"] and plan["needs_force"]
    rollback = client.get(
        f"/api/v1/models/{TARGET}/versions/2/plan", params={"action": "rollback"}
    ).json()
    assert "never served in production" in rollback["refusal"]
    assert registry.revision() == revision


def test_a_change_needs_an_admin_and_a_refused_one_changes_nothing(
    setup: tuple[TestClient, Registry],
) -> None:
    client, registry = setup
    revision = registry.revision()
    url = f"/api/v1/models/{TARGET}/versions/2/promote"
    _error(client.post(url, json={"reason": "x"}), 401, "token")
    bearer = {"Authorization": f"Bearer {VIEWER_TOKEN}"}
    assert "admin" in _error(client.post(url, json={}, headers=bearer), 403, "token")
    bearer = {"Authorization": "Bearer nonsense"}
    _error(client.post(url, json={}, headers=bearer), 401, "token")
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    refused = _error(client.post(url, json={"reason": "try"}, headers=admin), 409, "version")
    assert "no feature repository" in refused and "nothing changed" in refused
    _error(client.post(url, json={"force": True, "reason": "  "}, headers=admin), 400, "reason")
    _error(
        client.post(
            f"/api/v1/models/{TARGET}/versions/2/canary", json={"reason": "x"}, headers=admin
        ),
        400,
        "percent",
    )
    _error(client.post(url, json={"reason": "x" * 501}, headers=admin), 400, "reason")
    _error(client.post(url, content=b"{not json", headers=admin), 400, None)
    assert registry.revision() == revision


def test_login_session_and_csrf(setup: tuple[TestClient, Registry]) -> None:
    client, registry = setup
    revision = registry.revision()
    _error(client.get("/api/v1/session"), 401, "token")
    _error(client.post("/api/v1/session", json={"token": ""}), 401, "token")
    _error(client.post("/api/v1/session", json={}), 400, "token")
    assert "admin" in _error(
        client.post("/api/v1/session", json={"token": VIEWER_TOKEN}), 403, "token"
    )
    login = client.post("/api/v1/session", json={"token": ADMIN_TOKEN}).json()
    assert login["actor"] == "mlops"
    assert client.get("/api/v1/session").json()["actor"] == "mlops"
    # With the cookie, a change without the login's CSRF token is refused.
    url = f"/api/v1/models/{TARGET}/versions/2/shadow"
    _error(client.post(url, json={}), 403, None)
    form = client.post(f"/models/{TARGET}/v2/shadow", data={"reason": "x", "csrf": "forged"})
    assert form.status_code == 403 and "csrf" in form.text
    page = client.post("/login", data={"token": "wrong"})
    assert page.status_code == 401 and "matches no caller" in page.text
    redirect = client.post(
        "/login", data={"token": ADMIN_TOKEN, "next": "//evil.example/"}, follow_redirects=False
    )
    assert redirect.headers["location"] == "/models"  # no open redirect
    client.delete("/api/v1/session")
    _error(client.get("/api/v1/session"), 401, "token")
    assert registry.revision() == revision


@pytest.mark.parametrize(
    ("path", "status", "field"),
    [
        ("/api/v1/models/nope/versions/1", 404, "target"),
        (f"/api/v1/models/{TARGET}/versions/9", 404, "version"),
        (f"/api/v1/models/{TARGET}/versions/x", 400, "version"),
        (f"/api/v1/models/{TARGET}/compare?v=1", 400, "v"),
        (f"/api/v1/models/{TARGET}/compare?v=1&v=1", 400, "v"),
        (f"/api/v1/models/{TARGET}/compare?v=1&v=a", 400, "v"),
        (f"/api/v1/models/{TARGET}/compare?v=1&v=7", 404, "version"),
        (f"/api/v1/models/{TARGET}/versions/2/plan?action=fly", 400, "action"),
        (f"/api/v1/models/{TARGET}/versions/2/plan", 400, "action"),
        (f"/api/v1/models/{TARGET}/versions/2/plan?action=canary&percent=150", 400, "percent"),
        (f"/api/v1/models/{TARGET}/versions/2/plan?action=canary&percent=0", 400, "percent"),
        ("/api/v1/history?target=nope", 404, "target"),
        ("/api/v1/history?limit=0", 400, "limit"),
    ],
)
def test_bad_input_names_the_field(
    setup: tuple[TestClient, Registry], path: str, status: int, field: str
) -> None:
    client, _ = setup
    _error(client.get(path), status, field)
    page = client.get(path.replace("/api/v1", "").replace("/versions/", "/v"))
    if page.status_code != 404 or field != "target":
        assert page.status_code in (status, 404), (path, page.status_code)
    assert "<html" in page.text and "Traceback" not in page.text


def test_a_console_without_admin_callers_takes_its_one_time_token(tmp_path: Path) -> None:
    from scoring.console.auth import admin_configured

    settings = Settings(registry={"url": f"sqlite:///{tmp_path / 'r.db'}"})  # type: ignore[arg-type]
    assert not admin_configured(settings.auth)
    with TestClient(create_app(settings, login_token="one-time")) as client:
        _error(client.post("/api/v1/session", json={"token": "another"}), 401, "token")
        login = client.post("/api/v1/session", json={"token": "one-time"}).json()
        assert login["actor"].startswith("local:") and "auth off" in login["actor"]
    with TestClient(create_app(settings)) as client:  # no token made: nobody may log in
        _error(client.post("/api/v1/session", json={"token": "one-time"}), 401, "token")
