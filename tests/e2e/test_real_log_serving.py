"""A real purchase log served live, as a new user would: the Online Retail slice imported,
trained (implicit feedback: the log has no impressions), its features materialised (the log
ends in 2011: far outside every view's TTL from today), the version promoted, Triton and the
gateway started. The gateway ranks a user of the log as of the log's time with the scores the
offline model gives on the same point-in-time features; a shop without campaigns has no
activity_ranker, which is answered FAILED_PRECONDITION, not a server that never gets ready."""

from __future__ import annotations

import json
import math
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest

from scoring import workflows
from scoring.client import RankingClient
from scoring.core.settings import ImplicitFeedbackSettings, TrainingSettings
from scoring.core.targets import CandidateKind
from scoring.evaluation.model_scorer import model_scorer
from scoring.registry import Registry
from scoring.trainer.train import TrainConfig

from ..conftest import (
    TEXT_CACHE,
    copy_feature_repo,
    gateway_settings,
    require,
    triton_installed,
    triton_settings,
)

pytestmark = [pytest.mark.e2e, pytest.mark.triton]

LOG = Path(__file__).resolve().parents[1] / "fixtures" / "real" / "online-retail"
TARGET = "item_ranker"


def test_an_imported_purchase_log_is_served_as_of_its_time(tmp_path: Path) -> None:
    require(triton_installed(), "tritonserver binary (nvidia-pytriton) not installed")
    repo = copy_feature_repo(tmp_path / "features")
    (repo / "data").mkdir()
    if TEXT_CACHE.exists():  # reuse the test runs' text encodings
        (repo / "data" / "text_cache.parquet").write_bytes(TEXT_CACHE.read_bytes())
    settings = gateway_settings(
        repo, triton_settings(tmp_path / "model_repository", tmp_path / "triton")
    )
    settings.training = TrainingSettings(
        implicit={TARGET: ImplicitFeedbackSettings(max_rows=10_000)}
    )
    workflows.import_data(
        settings, LOG / "events.parquet", LOG / "items.parquet", LOG / "users.parquet"
    )
    workflows.apply_features(settings)
    (trained,) = workflows.train_and_register(settings, [TARGET], TrainConfig(epochs=2))
    workflows.materialize_features(settings)
    with Registry(settings.registry.url) as registry:
        promoter = workflows.build_promoter(settings, registry, "test", registry_only=True)
        promoter.promote(TARGET, trained.version, reason="first version")

    events = pd.read_parquet(LOG / "events.parquet")
    user = str(events["user_id"].value_counts().index[5])
    mine = events[events["user_id"] == user].sort_values("timestamp")
    recent = list(dict.fromkeys(mine["item_id"].astype(str)[::-1]))[:5]
    popular = [i for i in events["item_id"].astype(str).value_counts().index if i not in recent]
    candidates = recent + popular[:5] + ["no-such-item"]
    at = int(events["timestamp"].max().timestamp()) + 3600

    servers = workflows.Servers(settings, tmp_path / "run")
    try:
        servers.start_triton()
        assert servers.triton.models == [TARGET]  # nothing to load for campaigns
        address = servers.start_gateway()
        with RankingClient(address) as client:
            response = client.rank(user, candidates, CandidateKind.ITEM, timestamp_s=at)
            now = client.rank(user, candidates, CandidateKind.ITEM)
            with pytest.raises(grpc.RpcError) as info:
                client.rank(user, ["any"], CandidateKind.ACTIVITY)
    finally:
        servers.stop()

    assert response.model_version == str(trained.version) and not response.unknown_user
    scores = {c.id: c.score for c in response.candidates}
    unknown = {c.id for c in response.candidates if c.unknown}
    assert unknown == {"no-such-item"}
    # The gateway's scores are the offline model's on the features as of the request time.
    frame = pd.DataFrame(
        {
            "user_id": pd.Categorical([user] * len(candidates)),
            "item_id": pd.Categorical(candidates),
            "timestamp": pd.to_datetime([at] * len(candidates), unit="s", utc=True),
        }
    )
    scorer = model_scorer(settings, TARGET, trained.version)
    assert scorer is not None
    logits = scorer(frame)
    offline = {c: 1 / (1 + math.exp(-x)) for c, x in zip(candidates, logits, strict=True)}
    for c in candidates[:-1]:
        assert scores[c] == pytest.approx(offline[c], abs=1e-4), c
    # The user's own recent items rank above the catalogue's best sellers.
    assert np.mean([scores[c] for c in recent]) > np.mean([scores[c] for c in popular[:5]])
    # Today, the log's features are older than their TTL: answered from defaults, flagged.
    assert now.unknown_user
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "activity_ranker: no version is deployed" in (info.value.details() or "")
    manifest = json.loads(
        (settings.triton.model_repository / TARGET / "1" / "manifest.json").read_text()
    )
    assert "impressions" not in manifest["training"]["sources"]
