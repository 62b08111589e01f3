"""Privacy on the real stack: a gateway serving known users writes no raw user id to its log,
its metrics, its served-feature log or its event log; `scoring privacy forget USER` deletes the
user's rows from those logs, the offline tables and the online store, and no one else's."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from scoring import workflows
from scoring.client import RankingClient
from scoring.core.privacy import pseudonymizer
from scoring.core.served_events import read_events
from scoring.core.settings import settings_env
from scoring.core.targets import TARGETS, CandidateKind
from scoring.gateway.feature_source import FeastFeatureSource, FeatureRequest
from scoring.registry import Registry
from scoring.registry.promotion import register_version
from scoring.trainer.export import list_versions, read_manifest
from scoring.trainer.served import read_served

from ..conftest import FeatureRepo, private_stack

pytestmark = [pytest.mark.e2e, pytest.mark.triton]

USERS = ["u_000003", "u_000017", "u_000042", "u_000101"]
NEWCOMER = "u_999999"  # not in the data: answered from defaults, still never logged raw
ITEMS = [f"i_{i:06d}" for i in range(0, 40, 4)]
FORGOTTEN, KEPT = USERS[0], USERS[1]


def served_texts(directory: Path) -> dict[str, str]:
    """Every served-feature log file: its raw bytes and every value of its string columns
    (the bytes alone may hide a string in a compressed page)."""
    out = {}
    for path in sorted(directory.rglob("*.parquet")):
        table = pq.ParquetFile(path).read()
        values = [
            str(v)
            for name in table.column_names
            if name != "features"
            for v in table.column(name).to_pylist()
        ]
        out[str(path)] = path.read_bytes().decode("latin-1") + "\n".join(values)
    return out


def user_known(source: FeastFeatureSource, user: str) -> bool:
    """Whether the online store has any of the user's profile features (365-day TTL)."""
    target = TARGETS["item_ranker"]
    contract = source.contract(target.feature_service)
    now = time.time()
    request = FeatureRequest(contract, target, user, tuple(ITEMS[:2]), {"request_ts": int(now)})
    got = contract.assemble(pd.DataFrame(source.read_blocking(request, now=now).columns))
    return not got.indicators[:, contract.refs.index("user_profile__segment")].all()


def test_no_raw_user_id_leaves_the_gateway_and_forget_removes_one_user(
    tmp_path: Path, feature_repo_ready: FeatureRepo, model_repository: Path
) -> None:
    settings = private_stack(tmp_path, feature_repo_ready, model_repository)
    models = settings.triton.model_repository
    with Registry(settings.registry.url) as registry:
        promoter = workflows.build_promoter(settings, registry, "test", registry_only=True)
        for name in TARGETS:
            version = list_versions(models / name)[-1]
            register_version(
                registry, models, name, version, read_manifest(models / name, version), "test"
            )
            promoter.promote(name, version, reason="start")

    servers = workflows.Servers(settings, tmp_path / "run")
    gw = settings.gateway
    try:
        servers.start_triton()
        address = servers.start_gateway()
        with RankingClient(address) as client:
            for user in [*USERS, NEWCOMER]:
                response = client.rank(user, ITEMS, CandidateKind.ITEM, top_k=3)
                assert response.unknown_user == (user == NEWCOMER)
                assert client.feedback(response.request_id, response.candidates[0].id, "click")
        url = f"http://127.0.0.1:{gw.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as answer:
            metrics = answer.read().decode()
        servers.gateway.stop()  # drains the served-feature log and the event log

        texts = {
            "gateway log": (tmp_path / "run" / "gateway.log").read_text(errors="replace"),
            "metrics": metrics,
            **{str(p): p.read_text() for p in gw.events_dir.rglob("*.jsonl")},
            **served_texts(gw.feature_log_dir),
        }
        assert len(read_served(gw.feature_log_dir, "item_ranker")) == 5 * len(ITEMS)
        assert len(read_events(gw.events_dir, "request")) == 5
        pseudonym = pseudonymizer(settings.privacy)
        for user in USERS:  # logged, as the keyed hash
            assert f"user={pseudonym(user)}" in texts["gateway log"]
        for user in [*USERS, NEWCOMER]:
            unkeyed = hashlib.sha256(user.encode()).hexdigest()[:12]  # the old, reversible hash
            for where, text in texts.items():
                assert user not in text, f"raw user id {user} in {where}"
                assert unkeyed not in text, f"unkeyed hash of {user} in {where}"

        # Forget one user, as an operator would.
        source = FeastFeatureSource(settings.feast.repo_path, settings.feast.fs_yaml)
        assert user_known(source, FORGOTTEN) and user_known(source, KEPT)
        result = subprocess.run(
            [str(Path(sys.executable).with_name("scoring")), "privacy", "forget", FORGOTTEN],
            env={**os.environ, **settings_env(settings)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        printed = result.stdout + result.stderr
        assert result.returncode == 0, printed[-3000:]
        for where in ("served-feature log", "events: request", "events: feedback"):
            assert where in printed, printed
        assert "offline table" in printed and "online store" in printed, printed

        served = read_served(gw.feature_log_dir, "item_ranker")
        assert pseudonym(FORGOTTEN) not in set(served["user_id"])
        assert set(served["user_id"]) == {pseudonym(u) for u in [*USERS[1:], NEWCOMER]}
        requests = read_events(gw.events_dir, "request")
        assert {e["user"] for e in requests} == {pseudonym(u) for u in [*USERS[1:], NEWCOMER]}
        assert {e["request_id"] for e in read_events(gw.events_dir, "feedback")} == {
            e["request_id"] for e in requests
        }
        data = settings.feast.repo_path / "data"
        with_users = 0
        for path in sorted(data.glob("*.parquet")):
            if "user_id" not in pq.read_schema(path).names:
                continue
            with_users += 1
            ids = set(pq.read_table(path, columns=["user_id"]).column(0).to_pylist())
            assert FORGOTTEN not in ids, path.name
            assert KEPT in ids, path.name
        assert with_users >= 5  # events, impressions, the user feature tables
        source = FeastFeatureSource(settings.feast.repo_path, settings.feast.fs_yaml)
        assert not user_known(source, FORGOTTEN), "the online store still has the user"
        assert user_known(source, KEPT)
    finally:
        servers.stop()
