"""The console in a real headless browser, on a real registry, Feast repo, Triton and gateway.

One private stack for the module: item_ranker v1 (production), v2 (retrained with another seed)
and v3 (v1's artifact registered with a feature schema hash the live service does not have),
the other targets' v1 in production; activity_stats' online rows rewritten ten days old (a
pipeline that stopped). The console runs as `scoring console` with an admin caller configured
as the gateway's callers are. The tests log in, compare, promote through the page and see the
gateway serve the promoted version, roll back, see the schema gate refuse v3, see the stale view
flagged, and take the README's screenshots on the way.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scoring.client import RankingClient
from scoring.console.process import ConsoleProcess
from scoring.core.access import new_token, token_sha256
from scoring.core.settings import CallerSettings, Settings
from scoring.core.targets import TARGETS
from scoring.gateway.process import GatewayProcess
from scoring.registry import Registry, Stage
from scoring.registry.promotion import register_version, sync
from scoring.trainer.export import read_manifest
from scoring.triton.control import TritonControl

from ..conftest import FeatureRepo, free_port, private_stack, require, triton_installed

pytestmark = [pytest.mark.e2e, pytest.mark.triton]
TARGET = "item_ranker"
ADMIN = "mlops-alice"
ADMIN_TOKEN = new_token()
VIEWER_TOKEN = new_token()  # a gateway caller without the admin role
STALE_VIEW = "activity_stats"
ITEMS = [f"i_{j:06d}" for j in range(12)]
REQUESTED: list[str] = []  # every URL the module's tab fetched (pages, styles, images)


@dataclass
class Stack:
    settings: Settings
    console: ConsoleProcess
    gateway: GatewayProcess
    registry: Registry

    @property
    def url(self) -> str:
        return self.console.url

    def production(self, target: str = TARGET) -> int | None:
        routing = self.registry.routing().targets.get(target)
        return routing.production.version if routing and routing.production else None

    def served_version(self, user: str = "u_000001") -> str:
        with RankingClient(self.gateway.address) as client:
            return client.rank(user, ITEMS, disable_fallback=True).model_version


def _models_with_v2_and_v3(base: Path, repo: FeatureRepo, model_repository: Path) -> Path:
    """The session's models plus item_ranker v2 (another seed, 2 epochs) and v3 (v1's files,
    its manifest claiming another feature schema)."""
    from scoring.trainer.train import TrainConfig, train_target

    models = base / "model_repository"
    shutil.copytree(model_repository, models)
    result = train_target(
        repo.store(), TARGETS[TARGET], repo.path, models, TrainConfig(epochs=2, seed=11)
    )
    assert result.created and result.version == 2
    v1, v3 = models / TARGET / "1", models / TARGET / "3"
    shutil.copytree(v1, v3)
    manifest = json.loads((v3 / "manifest.json").read_text())
    manifest["contract"]["schema_hash"] = "0123456789abcdef"
    (v3 / "manifest.json").write_text(json.dumps(manifest))
    return models


def _age_view(settings: Settings, view: str, days: float) -> None:
    """Rewrites every online row of `view` with its latest values stamped `days` ago."""
    import pandas as pd

    from scoring import workflows

    store = workflows.open_feature_store(settings)
    fv = store.get_feature_view(view)
    source = fv.batch_source
    frame = pd.read_parquet(settings.feast.repo_path / source.path)
    ts = source.timestamp_field
    keys = [c.name for c in fv.entity_columns]
    latest = frame.sort_values(ts).groupby(keys, as_index=False).tail(1)
    rows = latest[[*keys, *[f.name for f in fv.features], ts]].copy()
    rows[ts] = pd.Timestamp(datetime.now(UTC) - timedelta(days=days))
    store.write_to_online_store(view, rows)


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory,
    feature_repo_ready: FeatureRepo,
    model_repository: Path,
) -> Iterator[Stack]:
    from scoring.triton.server import TritonServer

    require(triton_installed(), "tritonserver binary (nvidia-pytriton) not installed")
    base = tmp_path_factory.mktemp("console")
    models = _models_with_v2_and_v3(base / "models", feature_repo_ready, model_repository)
    settings = private_stack(base / "stack", feature_repo_ready, models)
    settings.auth.callers = (
        CallerSettings(
            name=ADMIN, token_sha256=(token_sha256(ADMIN_TOKEN),), rpcs=("*",), roles=("admin",)
        ),
        CallerSettings(name="shop-frontend", token_sha256=(token_sha256(VIEWER_TOKEN),)),
    )
    settings.registry.drain_s = 0.2
    settings.console.port = free_port()
    settings.console.scrape_interval_s = 0.5
    models = settings.triton.model_repository
    registry = Registry(settings.registry.url)
    for name in TARGETS:
        for version in (1, 2, 3) if name == TARGET else (1,):
            manifest = read_manifest(models / name, version)
            register_version(registry, models, name, version, manifest, "trainer")
        registry.set_stage(name, 1, Stage.PRODUCTION, actor="bootstrap", reason="first deploy")
    _age_view(settings, STALE_VIEW, days=10)
    run = base / "logs"
    with TritonServer(settings.triton, list(TARGETS)) as triton:
        control = TritonControl(triton.settings)
        for name in TARGETS:
            sync(registry, control, name)
        with GatewayProcess(settings, log_path=run / "gateway.log") as gateway:
            with ConsoleProcess(settings, run / "console.log") as console:
                yield Stack(settings, console, gateway, registry)
    registry.close()


@pytest.fixture(scope="module")
def page(browser: Any, stack: Stack) -> Iterator[Any]:
    """One browser tab (laptop-sized) for the module: the login carries from test to test."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=stack.url)
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.on("request", lambda request: REQUESTED.append(request.url))
    yield page
    context.close()


def shot(page: Any, folder: Path, name: str) -> None:
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def api(stack: Stack, path: str) -> Any:
    with urllib.request.urlopen(f"{stack.url}{path}", timeout=30) as response:
        return json.loads(response.read())


def wait_until(predicate: Any, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def test_login_refuses_unknown_and_non_admin_tokens(page: Any, screenshots: Path) -> None:
    page.goto("/login")
    page.fill("#token", "not-a-token")
    page.click("form.stack button[type=submit]")
    assert "matches no caller" in page.inner_text(".alert.error")
    page.fill("#token", VIEWER_TOKEN)
    page.click("form.stack button[type=submit]")
    assert "no 'admin' role" in page.inner_text(".alert.error")
    assert page.locator("header .actor").count() == 0
    shot(page, screenshots, "login")

    page.fill("#token", ADMIN_TOKEN)
    page.click("form.stack button[type=submit]")
    page.wait_for_url("**/models")
    assert page.inner_text("header .actor") == ADMIN


def test_models_page_and_a_version_comparison(page: Any, stack: Stack, screenshots: Path) -> None:
    page.goto("/models")
    section = page.locator(f"section#{TARGET}")
    assert "production v1" in " ".join(section.locator("p").first.inner_text().split())
    for version in ("1", "2", "3"):
        assert section.locator(f"a[href='/models/{TARGET}/v{version}']").count() == 1
    shot(page, screenshots, "models")

    section.locator("input[name=v][value='3']").uncheck()
    section.locator("input[name=v][value='1']").check()
    section.locator("input[name=v][value='2']").check()
    section.locator("button", has_text="Compare selected").click()
    page.wait_for_url(f"**/models/{TARGET}/compare?*")
    table = page.locator("table#comparison")
    header = table.locator("thead").inner_text()
    assert "v1" in header and "v2" in header and "v3" not in header
    auc_row = table.locator("tr", has_text="auc").first.inner_text().split()
    v1, v2 = stack.registry.get(TARGET, 1), stack.registry.get(TARGET, 2)
    assert f"{v1.metrics['auc']:.4f}" in auc_row and f"{v2.metrics['auc']:.4f}" in auc_row
    assert page.locator("svg.chart").count() >= 2
    shot(page, screenshots, "compare")


def test_the_schema_gate_refuses_a_version_trained_on_another_schema(
    page: Any, stack: Stack, screenshots: Path
) -> None:
    revision = stack.registry.revision()
    page.goto(f"/models/{TARGET}/v3")
    gates = page.locator("section.gates[data-stage=production]").inner_text()
    assert "schema" in gates and "refused" in gates
    page.goto(f"/models/{TARGET}/v3/promote")
    assert "0123456789abcdef" in page.inner_text("#blocked")
    page.click("#confirm button[type=submit]")
    refusal = page.inner_text("#refusal")
    assert "live feature service has schema" in refusal and "nothing changed" in refusal.lower()
    shot(page, screenshots, "gate-refused")
    assert stack.registry.revision() == revision
    assert stack.production() == 1 and stack.served_version() == "1"


def test_promote_through_the_page_and_the_gateway_serves_it(
    page: Any, stack: Stack, screenshots: Path
) -> None:
    assert stack.served_version() == "1"
    page.goto(f"/models/{TARGET}/v2")
    page.click("a.button:has-text('Promote')")
    page.wait_for_url(f"**/models/{TARGET}/v2/promote")
    plan = page.locator("table.plan").inner_text()
    assert "production\tv1\tv2" in plan.replace("  ", "\t") or ("v1" in plan and "v2" in plan), plan
    shot(page, screenshots, "confirm")
    if page.locator("#force").count():  # v2 trails v1 beyond the tolerance: refused first
        page.fill("#reason", "")
        page.click("#confirm button[type=submit]")
        assert "worse than production" in page.inner_text("#refusal")
        assert stack.production() == 1
        page.check("#force")
    page.fill("#reason", "browser test: promote v2")
    page.click("#confirm button[type=submit]")
    page.wait_for_selector("#done")
    assert "production v2" in page.inner_text("#done")
    shot(page, screenshots, "promoted")
    assert stack.production() == 2
    wait_until(lambda: stack.served_version() == "2")
    event = stack.registry.history(TARGET)[-1]
    assert (event.version, event.to_stage, event.actor) == (2, Stage.PRODUCTION, ADMIN)
    assert event.details and event.details["auth"]["authenticated_by"] == "token"


def test_roll_back_from_the_page(page: Any, stack: Stack, screenshots: Path) -> None:
    assert stack.production() == 2
    page.goto(f"/models/{TARGET}/v1")
    page.click("a.button:has-text('Roll back to this')")
    page.fill("#reason", "browser test: back to v1")
    page.click("#confirm button[type=submit]")
    page.wait_for_selector("#done")
    assert stack.production() == 1
    wait_until(lambda: stack.served_version() == "1")
    page.goto(f"/history?target={TARGET}")
    rows = page.locator("table.events tbody tr").all_inner_texts()  # newest first
    back = next(r for r in rows if "\tv1\t" in r and "→ production" in r)
    assert rows.index(back) <= 1 and "rollback" in back and ADMIN in back
    assert "browser test: back to v1" in back
    assert any("browser test: promote v2" in r and "\tv2\t" in r for r in rows[rows.index(back) :])
    shot(page, screenshots, "history")


def test_bad_form_input_gets_a_message_and_changes_nothing(page: Any, stack: Stack) -> None:
    revision = stack.registry.revision()
    page.goto(f"/models/{TARGET}/v2/canary?percent=20")
    csrf = page.locator("#confirm input[name=csrf]").input_value()
    form = f"/models/{TARGET}/v2/canary"
    cases = [
        ({"csrf": csrf, "percent": "150", "reason": "x"}, 400, "percent"),
        ({"csrf": csrf, "percent": "abc", "reason": "x"}, 400, "percent"),
        ({"csrf": csrf, "percent": "20", "force": "true", "reason": " "}, 400, "reason"),
        ({"csrf": "forged", "percent": "20", "reason": "x"}, 403, "csrf"),
        ({"percent": "20", "reason": "x"}, 403, "csrf"),
    ]
    for data, status, field in cases:
        response = page.request.post(form, form=data)
        assert response.status == status, (data, response.text())
        assert field in response.text(), (data, response.text())
    unknown = page.request.post(f"/models/{TARGET}/v99/canary", form={"csrf": csrf})
    assert unknown.status == 404 and "version" in unknown.text()
    anonymous = page.context.browser.new_context(base_url=stack.url)
    try:
        refused = anonymous.request.post(
            f"/api/v1/models/{TARGET}/versions/2/promote", data={"reason": "x"}
        )
        assert refused.status == 401 and json.loads(refused.text())["field"] == "token"
        refused = anonymous.request.post(
            f"/api/v1/models/{TARGET}/versions/2/promote",
            data={"reason": "x"},
            headers={"Authorization": f"Bearer {VIEWER_TOKEN}"},
        )
        assert refused.status == 403
    finally:
        anonymous.close()
    assert stack.registry.revision() == revision


def test_experiments_and_serving_pages(page: Any, stack: Stack, screenshots: Path) -> None:
    with RankingClient(stack.gateway.address) as client:
        for k in range(40):
            answer = client.rank(f"u_{k:06d}", ITEMS)
            if k % 3 == 0:
                client.feedback(answer.request_id, answer.candidates[0].id, "click")
    page.goto(f"/experiments?target={TARGET}")
    text = page.inner_text("main")
    assert "production" in text
    shot(page, screenshots, "experiments")

    def serving_ready() -> bool:
        served = api(stack, "/api/v1/serving")
        return bool(json.dumps(served).count(TARGET))

    wait_until(serving_ready)
    page.goto("/serving")
    text = page.inner_text("main")
    assert TARGET in text
    shot(page, screenshots, "serving")


def test_a_stale_view_is_flagged(page: Any, stack: Stack, screenshots: Path) -> None:
    page.goto("/features")
    warning = page.locator(".alert.warn, .alert.error").first.inner_text()
    assert STALE_VIEW in warning
    page.locator("details summary", has_text=STALE_VIEW).first.click()  # its features
    shot(page, screenshots, "features")


def test_pages_fit_a_narrow_window(browser: Any, stack: Stack, screenshots: Path) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 740}, base_url=stack.url)
    try:
        narrow = context.new_page()
        for path in ("/models", f"/models/{TARGET}/v2", "/experiments", "/features", "/serving"):
            narrow.goto(path)
            width = narrow.evaluate("document.documentElement.scrollWidth")
            assert width <= 376, f"{path} is {width}px wide in a 375px window"
        narrow.goto("/models")
        shot(narrow, screenshots, "models-narrow")
    finally:
        context.close()


def test_every_asset_came_from_the_console(page: Any, stack: Stack) -> None:
    page.goto("/api/docs")
    assert "/api/v1/models/{target}/versions/{version}/{action}" in page.inner_text("main")
    assert len(REQUESTED) > 20
    elsewhere = [url for url in REQUESTED if not url.startswith(stack.url + "/")]
    assert elsewhere == [], elsewhere[:5]
    assert any(url.endswith("/static/console.css") for url in REQUESTED)
