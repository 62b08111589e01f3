"""The serving loop, end to end on the real stack: serve, send Feedback, train from what was
served (the exact inputs scored, labelled by the Feedback within the attribution window),
promote the new version through Triton, and have the gateway serve it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scoring import workflows
from scoring.client import RankingClient
from scoring.core import feature_repo
from scoring.core.contract import contract_from_store
from scoring.core.targets import TARGETS, CandidateKind
from scoring.registry import Registry
from scoring.registry.promotion import register_version
from scoring.trainer.export import list_versions, read_manifest
from scoring.trainer.served import ServedLog, read_served
from scoring.trainer.train import TrainConfig

from ..conftest import FeatureRepo, private_stack

pytestmark = [pytest.mark.e2e, pytest.mark.triton]

TARGET = "item_ranker"
USERS = [f"u_{i:06d}" for i in range(0, 200, 5)]
ITEMS = [f"i_{i:06d}" for i in range(0, 60, 3)]


def test_served_impressions_and_feedback_train_the_next_version(
    tmp_path: Path, feature_repo_ready: FeatureRepo, model_repository: Path
) -> None:
    settings = private_stack(tmp_path, feature_repo_ready, model_repository)
    repo, models = settings.feast.repo_path, settings.triton.model_repository
    # The session's trained versions, registered and in production.
    with Registry(settings.registry.url) as registry:
        promoter = workflows.build_promoter(settings, registry, "test", registry_only=True)
        for name in TARGETS:
            version = list_versions(models / name)[-1]
            manifest = read_manifest(models / name, version)
            register_version(registry, models, name, version, manifest, "test")
            promoter.promote(name, version, reason="start")
    first = list_versions(models / TARGET)[-1]

    servers = workflows.Servers(settings, tmp_path / "run")
    try:
        servers.start_triton()
        address = servers.start_gateway()
        served: list[str] = []
        clicks = 0
        with RankingClient(address) as client:
            for k, user in enumerate(USERS):
                response = client.rank(user, ITEMS, CandidateKind.ITEM, top_k=5)
                assert response.model_version == str(first)
                served.append(response.request_id)
                if k % 2 == 0:  # every other user clicks the top candidate
                    assert client.feedback(response.request_id, response.candidates[0].id, "click")
                    clicks += 1
        # A clean stop drains the served-feature log and the event log.
        servers.gateway.stop()

        logged = read_served(settings.gateway.feature_log_dir, TARGET)
        assert set(logged["request_id"]) == set(served)

        # Train on the served impressions alone, register, promote through Triton.
        log = ServedLog(settings.gateway.feature_log_dir, settings.gateway.events_dir, only=True)
        (new,) = workflows.train_and_register(settings, [TARGET], TrainConfig(epochs=2), served=log)
        sources = new.manifest["training"]["sources"]["served"]
        assert sources["rows"] == len(USERS) * 5  # the returned candidates are the impressions
        assert sources["clicks"] == clicks
        contract = contract_from_store(feature_repo.open_store(repo), "item_ranker_v1")
        assert new.manifest["contract"]["schema_hash"] == contract.schema_hash

        address = servers.start_gateway()
        with Registry(settings.registry.url) as registry:
            promoter = workflows.build_promoter(settings, registry, "test")
            promoter.promote(TARGET, new.version, force=True, reason="trained on served traffic")
        deadline = time.monotonic() + 30
        with RankingClient(address) as client:
            served_version = ""
            while time.monotonic() < deadline and served_version != str(new.version):
                served_version = client.rank(USERS[0], ITEMS, CandidateKind.ITEM).model_version
                time.sleep(0.2)
        assert served_version == str(new.version)
    finally:
        servers.stop()
