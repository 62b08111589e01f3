"""Online feature reads for the gateway, behind one small interface (`FeatureSource`).

Two implementations: `FeastFeatureSource` here (through the Feast SDK, any online store) and
`RedisFeatureSource` (redis_source.py, Feast's Redis layout read directly). Both get their
contracts and read plans from a `FeatureCatalog` and apply TTL, on-demand features and age with
`ReadPlan.finish` (read_plan.py), so they give the same answer.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from scoring.core.contract import FeatureContract
from scoring.core.targets import USER_JOIN_KEY, Target
from scoring.gateway.read_plan import FeatureCatalog, OnlineFeatures

__all__ = [
    "FeastFeatureSource",
    "FeatureRequest",
    "FeatureSource",
    "OnlineFeatures",
    "RowsRequest",
]


@dataclass(frozen=True, slots=True)
class FeatureRequest:
    """One online read: the contract's features of one user and their candidates.

    Attributes:
        request_values: request-time inputs of the on-demand views (`request_ts`).
    """

    contract: FeatureContract
    target: Target
    user_id: str
    candidate_ids: tuple[str, ...]
    request_values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RowsRequest:
    """A read of the stored features of a FeatureService that is no model's contract, for
    entity rows alone (no user, no on-demand views): the cart's items (`Target.
    cart_feature_service`). Its features may be of any dtype (strings included).

    Attributes:
        service: the FeatureService.
        join_key: the rows' join key, e.g. "item_id".
        ids: one row per id, in this order.
        request_ts: the request time in Unix seconds (TTL and age are measured from it).
    """

    service: str
    join_key: str
    ids: tuple[str, ...]
    request_ts: float


class FeatureSource(Protocol):
    """Where the gateway gets features from.

    `read` runs on the gateway's event loop under the request's feature budget (cancelled when
    it runs out); `contract` and `check` are called from a worker thread.
    """

    def contract(self, service: str) -> FeatureContract:
        """The live feature contract of a FeatureService."""
        ...

    async def read(self, request: FeatureRequest) -> OnlineFeatures:
        """The request's features, column by column."""
        ...

    def stored_features(self, service: str) -> tuple[str, ...]:
        """The stored features (`<view>__<feature>`) a FeatureService reads, any dtype.

        Raises:
            feast.errors.FeatureServiceNotFoundException: no such service is registered.
        """
        ...

    async def read_rows(self, request: RowsRequest) -> OnlineFeatures:
        """The stored features of `request.service` for its rows, column by column (TTL
        applied, `ReadPlan.rows`); like `read`, on the loop under the request's budget."""
        ...

    def check(self) -> None:
        """Raises if the store cannot be read."""
        ...

    async def aclose(self) -> None:
        """Releases the source's connections and threads."""
        ...


class FeastFeatureSource:
    """Reads stored features through the Feast SDK; TTL, on-demand features and age on top.

    The SDK blocks: `read` runs `read_blocking` in the source's own thread pool, off the loop.
    """

    def __init__(self, repo_path: Path, fs_yaml: Path | None = None, workers: int = 1) -> None:
        """Opens the store of `repo_path` with the profile `fs_yaml`.

        Args:
            repo_path: the Feast repo (settings.feast.repo_path).
            fs_yaml: the store profile (settings.feast.fs_yaml); when None, the gateway
                process's SCORING_FEAST__FS_YAML applies, else the repo's feature_store.yaml.
            workers: threads for `read` (settings.gateway.feature_workers); one by default,
                because the SQLite online store shares a connection.
        """
        self.catalog = FeatureCatalog(repo_path, fs_yaml)
        self.store = self.catalog.store
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="features")

    def contract(self, service: str) -> FeatureContract:
        return self.catalog.contract(service)

    def read_blocking(self, request: FeatureRequest, now: float | None = None) -> OnlineFeatures:
        """Reads the request's features, in this thread.

        Args:
            now: the request time in Unix seconds (TTL and age are measured from it);
                `request.request_values["request_ts"]`, else the clock, by default.
        """
        plan = self.catalog.plan(request.contract)
        join_key = request.target.join_key
        rows = [{USER_JOIN_KEY: request.user_id, join_key: c} for c in request.candidate_ids]
        # Stored values by `<view>__<feature>`, event times by `<view>__<feature>__ts`.
        raw: dict[str, list[Any]] = self.store.get_online_features(
            features=list(plan.refs), entity_rows=rows, full_feature_names=True
        ).to_dict(include_event_timestamps=True)
        count = len(request.candidate_ids)
        return plan.finish(request.contract, raw, request.request_values, count, now)

    async def read(self, request: FeatureRequest) -> OnlineFeatures:
        """`read_blocking` in the source's thread pool, awaited."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(self.read_blocking, request))

    def stored_features(self, service: str) -> tuple[str, ...]:
        return self.catalog.service_plan(service).stored

    def read_rows_blocking(self, request: RowsRequest) -> OnlineFeatures:
        """Reads the stored features of `request.service` for its rows, in this thread."""
        plan = self.catalog.service_plan(request.service)
        rows = [{request.join_key: i} for i in request.ids]
        raw: dict[str, list[Any]] = self.store.get_online_features(
            features=list(plan.refs), entity_rows=rows, full_feature_names=True
        ).to_dict(include_event_timestamps=True)
        return plan.rows(raw, len(request.ids), request.request_ts)

    async def read_rows(self, request: RowsRequest) -> OnlineFeatures:
        """`read_rows_blocking` in the source's thread pool, awaited."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(self.read_rows_blocking, request))

    def check(self) -> None:
        # A registry read and an online read of one (absent) user: both must succeed.
        views = self.store.list_feature_views(allow_cache=True)  # no registry re-read per poll
        user_views = [v for v in views if v.entities == ["user"]]
        if not user_views:
            raise RuntimeError("feature registry has no user feature view")
        view = user_views[0]
        self.store.get_online_features(
            features=[f"{view.name}:{view.features[0].name}"],
            entity_rows=[{USER_JOIN_KEY: "__health_check__"}],
        )

    async def aclose(self) -> None:
        # Reads still queued are cancelled; one running finishes in its thread, unawaited.
        self._pool.shutdown(wait=False, cancel_futures=True)
