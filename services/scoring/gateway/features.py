"""Online feature reads for the gateway, behind one small interface."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import pandas as pd
from feast import FeatureStore

from scoring.core.contract import FeatureContract, contract_from_store
from scoring.core.targets import USER_JOIN_KEY, Target


class FeatureSource(Protocol):
    """Where the gateway gets features from. Implementations are synchronous and thread-safe
    per instance; the gateway calls them from a worker thread under the request deadline."""

    def contract(self, service: str) -> FeatureContract:
        """The live feature contract of a FeatureService."""
        ...

    def fetch(
        self,
        contract: FeatureContract,
        target: Target,
        user_id: str,
        candidate_ids: tuple[str, ...],
        request_values: dict[str, Any],
    ) -> pd.DataFrame:
        """One row per candidate, columns named by full feature name; None/NaN when missing."""
        ...

    def check(self) -> None:
        """Raises if the store cannot be read."""
        ...


class FeastFeatureSource:
    """Reads through the Feast SDK (`get_online_features` with the target's FeatureService)."""

    def __init__(self, repo_path: Path) -> None:
        self.store = FeatureStore(repo_path=str(repo_path))

    def contract(self, service: str) -> FeatureContract:
        return contract_from_store(self.store, service)

    def fetch(
        self,
        contract: FeatureContract,
        target: Target,
        user_id: str,
        candidate_ids: tuple[str, ...],
        request_values: dict[str, Any],
    ) -> pd.DataFrame:
        rows = [
            {USER_JOIN_KEY: user_id, target.join_key: cid, **request_values}
            for cid in candidate_ids
        ]
        response = self.store.get_online_features(
            features=self.store.get_feature_service(contract.service),
            entity_rows=rows,
            full_feature_names=True,
        )
        return response.to_df()

    def check(self) -> None:
        # A registry read and an online read of one (absent) user: both must succeed.
        views = self.store.list_feature_views()
        user_views = [v for v in views if v.entities == ["user"]]
        if not user_views:
            raise RuntimeError("feature registry has no user feature view")
        view = user_views[0]
        self.store.get_online_features(
            features=[f"{view.name}:{view.features[0].name}"],
            entity_rows=[{USER_JOIN_KEY: "__health_check__"}],
        )
