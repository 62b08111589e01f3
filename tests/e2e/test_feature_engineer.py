"""The feature engineer's path of the README, run as written: declare a feature with its default,
build its column, apply, materialise, see the contract's hash change, train, promote, and have the
real gateway serve the new version with the new feature in its model input."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from scoring import workflows
from scoring.client import RankingClient
from scoring.core import feature_repo
from scoring.core.contract import contract_from_store
from scoring.core.targets import CandidateKind
from scoring.registry import Registry
from scoring.trainer.export import list_versions, read_manifest
from scoring.trainer.train import TrainConfig

from ..conftest import FeatureRepo, private_stack

pytestmark = [pytest.mark.e2e, pytest.mark.triton]

TARGET = "item_ranker"
SERVICE = "item_ranker_v1"
NEW_REF = "user_behavior__cart_rate_30d"
# README step 1, the line a feature engineer adds to `user_behavior`'s schema in features/user.py.
DECLARATION = (
    " " * 4
    + 'feature("cart_rate_30d", Float32, default=0.0, description="carts / views, 30 days"),\n'
)
ANCHOR = '    feature("ctr_30d", Float32'


def declare_feature(repo: Path) -> None:
    """Step 1: the declaration, with its default, in the view it belongs to."""
    path = repo / "user.py"
    source = path.read_text()
    assert source.count(ANCHOR) == 1, "features/user.py changed: update this test's anchor"
    path.write_text(source.replace(ANCHOR, DECLARATION + ANCHOR))


def build_column(repo: Path) -> pd.DataFrame:
    """Step 2: the column in the view's source table, from the window sums it already holds
    (what a line in scoring.datagen.build computes)."""
    path = repo / "data" / "user_behavior.parquet"
    table = pd.read_parquet(path)
    views = table["views_30d"].to_numpy(dtype=np.float64)
    carts = table["carts_30d"].to_numpy(dtype=np.float64)
    table["cart_rate_30d"] = np.where(views > 0, carts / np.maximum(views, 1.0), 0.0).astype(
        np.float32
    )
    table.to_parquet(path, index=False)
    return table


def served_rows(folder: Path, request_id: str, deadline_s: float = 30.0) -> pd.DataFrame:
    """The served-feature log's rows of one request (written off the request path)."""
    stop = time.monotonic() + deadline_s
    while time.monotonic() < stop:
        files = list(folder.rglob("*.parquet"))
        if files:
            rows = pd.concat([pq.ParquetFile(f).read().to_pandas() for f in files])
            mine = rows[rows["request_id"] == request_id]
            if len(mine):
                return mine
        time.sleep(0.2)
    raise AssertionError(f"request {request_id} never reached the served-feature log {folder}")


def test_a_new_feature_goes_from_declaration_to_the_served_model(
    tmp_path: Path, feature_repo_ready: FeatureRepo, model_repository: Path
) -> None:
    # Both targets' versions trained on today's contract (Triton serves every target).
    settings = private_stack(tmp_path, feature_repo_ready, model_repository)
    # One request, the gateway's first: it builds the new feature service's read plan on the
    # way. This test is about what is served, not how fast: a loaded machine must not turn its
    # answer into a degraded one (the 300 ms feature budget ran out once under load).
    settings.gateway.feature_timeout_ms = 5000
    repo, models = settings.feast.repo_path, settings.triton.model_repository
    before = contract_from_store(feature_repo.open_store(repo), SERVICE)
    assert NEW_REF not in before.refs
    old = read_manifest(models / TARGET, list_versions(models / TARGET)[-1])
    assert old["contract"]["schema_hash"] == before.schema_hash

    # Steps 1-5: declare, build the column, apply, materialise in full, read the contract.
    declare_feature(repo)
    table = build_column(repo)
    workflows.apply_features(settings)
    workflows.materialize_features(settings, full=True)
    after = contract_from_store(feature_repo.open_store(repo), SERVICE)
    assert NEW_REF in after.refs
    assert after.schema_hash != before.schema_hash
    assert after.features[after.refs.index(NEW_REF)].default == 0.0

    # Step 6: train. `user_behavior` is in both targets' FeatureServices, so both contracts
    # changed and both are retrained (the gateway refuses a model on a stale schema); the new
    # item version carries the feature and the new hash. Promote both.
    trained = {
        m.target: m for m in workflows.train_and_register(settings, None, TrainConfig(epochs=2))
    }
    new = trained[TARGET]
    assert all(m.created for m in trained.values())
    assert new.version == old["version"] + 1
    assert NEW_REF in [f["ref"] for f in new.manifest["contract"]["features"]]
    assert after.schema_hash in (models / TARGET / "config.pbtxt").read_text()
    with Registry(settings.registry.url) as registry:
        promoter = workflows.build_promoter(settings, registry, "test", registry_only=True)
        for m in trained.values():
            promoter.promote(m.target, m.version, reason="new feature: cart rate")

    # The gateway serves the new version, and the served model input holds the new feature.
    user = str(table.sort_values("cart_rate_30d")["user_id"].iloc[-1])
    servers = workflows.Servers(settings, tmp_path / "run")
    try:
        servers.start_triton()
        address = servers.start_gateway()
        with RankingClient(address) as client:
            items = [f"i_{i:06d}" for i in range(0, 40, 4)]
            response = client.rank(user, items, CandidateKind.ITEM, timestamp_s=int(time.time()))
    finally:
        servers.stop()
    assert response.model_version == str(new.version)
    assert not response.degraded
    rows = served_rows(settings.gateway.feature_log_dir, response.request_id)
    assert set(rows["schema_hash"]) == {after.schema_hash}
    matrix = np.stack(rows["features"].to_numpy())
    assert matrix.shape[1] == after.width
    online = feature_repo.open_store(repo).get_online_features(
        features=[NEW_REF.replace("__", ":")], entity_rows=[{"user_id": user}]
    )
    expected = online.to_dict()["cart_rate_30d"][0]
    assert expected is not None and expected > 0
    np.testing.assert_allclose(matrix[:, after.value_index[NEW_REF]], expected, rtol=1e-6)
