"""Where a trained model version plugs into `scoring evaluate` as one more scorer.

The version's scorer reads each candidate row's features as of the row's timestamp through the
version's FeatureService (Feast `get_historical_features`, in chunks, exactly as training
joins its rows: scoring.trainer.examples.point_in_time_frame), assembles them with the version's
contract (declared defaults and missing indicators, as served) and scores them with the
version's exported TorchScript model. The score is the click logit, not its sigmoid: a float32
probability saturates at 1.0 and would tie the most confident candidates.

Request fields other than `request_ts` (a basket target's cart fields) come from the frame's
columns of the same names (scoring.evaluation.basket_protocol.BasketTasks.frame); a contract
that needs one the frame lacks is refused, never scored with made-up values.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from scoring.core.settings import Settings
from scoring.evaluation.protocol import timestamps_ns

logger = logging.getLogger(__name__)
ORDER = "__order"


def model_scorer(settings: Settings, target: str, version: int) -> ModelScorer | None:
    """A scorer for trained version `version` of `target`.

    What it does (scoring.evaluation.metrics.Scorer): takes a frame of rows with user_id and
    item_id (categoricals) and timestamp (UTC: the held-out event's time), and returns one
    float score per row, in row order, higher = better. Features are read as of each row's
    timestamp, never later; users and items unknown to the store get the declared defaults.

    The model must not have learnt from the held-out interactions: train it with
    `scoring train --holdout loo` (or `time`, for the time split); a version trained on the
    whole log is still scored, with a warning that its figures are optimistic.

    Args:
        settings: the CLI's settings (model repository, feature repo).
        target: the model target, e.g. "item_ranker".
        version: the trained version in settings.triton.model_repository / target.

    Raises:
        EvaluationError: the version's files are unreadable, or its feature service is no
            longer the one it was trained on.
    """
    import torch

    from scoring.core.contract import contract_from_store
    from scoring.core.feature_repo import open_store
    from scoring.core.targets import TARGETS
    from scoring.evaluation.errors import EvaluationError
    from scoring.trainer.export import MODEL_FILE, read_manifest

    model_dir = settings.triton.model_repository / target
    try:
        manifest = read_manifest(model_dir, version)
        model = torch.jit.load(str(model_dir / str(version) / MODEL_FILE))  # type: ignore[no-untyped-call]
    except (OSError, ValueError, RuntimeError) as exc:
        raise EvaluationError(f"{target} v{version}: cannot read the version: {exc}") from None
    trained = manifest["contract"]
    store = open_store(settings.feast.repo_path, settings.feast.fs_yaml)
    try:
        contract = contract_from_store(store, trained["feature_service"])
    except Exception as exc:  # the service is gone from the registry
        raise EvaluationError(
            f"{target} v{version}: feature service {trained['feature_service']} is not in "
            f"the feature registry ({exc}); run `scoring features apply`"
        ) from None
    if contract.schema_hash != trained["schema_hash"]:
        raise EvaluationError(
            f"{target} v{version} was trained on {trained['feature_service']} schema "
            f"{trained['schema_hash']}; the registry's is {contract.schema_hash}: retrain it"
        )
    holdout = manifest.get("training", {}).get("sources", {}).get("holdout", "none")
    if holdout == "none":
        logger.warning(
            "%s v%s was trained on the whole log (no --holdout): it has seen the held-out "
            "interactions, so its figures are optimistic",
            target,
            version,
        )
    return ModelScorer(store, TARGETS[target], contract, model)


class ModelScorer:
    """Point-in-time features -> contract matrix -> the TorchScript model's click logit."""

    def __init__(self, store: Any, target: Any, contract: Any, model: Any) -> None:
        from scoring.trainer.asof_join import AsOfJoin, supports

        self.store, self.target, self.contract, self.model = store, target, contract, model
        service = store.get_feature_service(contract.service)
        # The views' tables are read once for every batch of the evaluation.
        self.service = service
        self.join = AsOfJoin(store, service) if supports(store, service) else None

    def only_users(self, users: Iterable[str]) -> None:
        """Reads the views' rows of these users only (the evaluated ones; before the first
        call): a large shop's user tables hold every active user's daily snapshots. Scoring
        another user's rows afterwards raises ValueError."""
        from scoring.core.targets import USER_JOIN_KEY
        from scoring.trainer.asof_join import AsOfJoin

        if self.join is not None:
            self.join = AsOfJoin(self.store, self.service, {USER_JOIN_KEY: users})

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        import torch

        from scoring.core.targets import USER_JOIN_KEY
        from scoring.evaluation.errors import EvaluationError
        from scoring.trainer.examples import TIMESTAMP, point_in_time_frame

        seconds = timestamps_ns(frame["timestamp"]) // 1_000_000_000
        fields = [f for f in self.contract.request_fields if f != "request_ts"]
        missing = [f for f in fields if f not in frame.columns]
        if missing:
            raise EvaluationError(
                f"{self.target.name}: {self.contract.service} needs request fields {missing} "
                "that this protocol's rows do not carry (a basket target: --protocol basket)"
            )
        rows = pd.DataFrame(
            {
                USER_JOIN_KEY: frame["user_id"].astype(str).to_numpy(dtype=object),
                self.target.join_key: frame["item_id"].astype(str).to_numpy(dtype=object),
                TIMESTAMP: pd.to_datetime(seconds, unit="s", utc=True),
                "request_ts": seconds,
                **{f: frame[f].to_numpy() for f in fields},
                ORDER: np.arange(len(frame)),
            }
        )
        joined = point_in_time_frame(self.store, self.target, self.contract, rows, join=self.join)
        joined = joined.sort_values(ORDER, ignore_index=True)
        x = self.contract.assemble(joined).matrix
        out = np.empty(len(x), dtype=np.float64)
        with torch.no_grad():
            for start in range(0, len(x), 65_536):
                logits = self.model.explain(torch.from_numpy(x[start : start + 65_536]))[0]
                out[start : start + len(logits)] = logits[:, 0].double().numpy()
        return out


__all__ = ["ModelScorer", "model_scorer"]
