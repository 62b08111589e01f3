"""A target's training rows: labelled impressions and/or implicit examples, point in time.

Sources (ImplicitFeedbackSettings.mode, per target):
- impressions (`data/impressions_<kind>.parquet`): each impression labelled by the click (and
  purchase) that followed it, weight 1;
- implicit examples (scoring.trainer.implicit): positive events and sampled negatives, weighted
  by event type.

A target with a cart feature service (`basket_completer`) trains on basket examples instead
(scoring.trainer.baskets: an item of each basket held out, the rest its cart, in the cart request
fields), whatever its impressions.

"auto" takes the impressions when there are at least `min_impressions`, and adds the implicit
examples when there are fewer (a shop without an impression log trains on its events alone);
"both" always combines them. Combined, the rows are one training set: the click head learns
"clicked or engaged" from both, each row weighted as above. The test window is cut on the
impressions' times and holds impressions only (their metrics stay comparable with an
impression-only version and with the synthetic oracle); implicit examples from before the cut
train, later ones are dropped.

Every row, whatever its source, gets the target's FeatureService features as of its own
timestamp, with Feast's point-in-time semantics (scoring.trainer.asof_join; Feast's
`get_historical_features` for a view that is not a Parquet table).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from feast.errors import FeatureViewNotFoundException

from scoring.core import feature_repo
from scoring.core.contract import FeatureContract
from scoring.core.settings import BasketExamplesSettings, ImplicitFeedbackSettings
from scoring.core.targets import USER_JOIN_KEY, Target
from scoring.evaluation.interactions import EventLogMissingError, PositiveEvents, load_interactions
from scoring.trainer.asof_join import AsOfJoin, supports
from scoring.trainer.baskets import basket_examples
from scoring.trainer.implicit import (
    KIND,
    WEIGHT,
    Holdout,
    TrainingDataError,
    before_holdout,
    holdout_ends,
    implicit_examples,
    labelled_impressions,
)

logger = logging.getLogger(__name__)

LABEL = "clicked"
PURCHASE = "purchased"
ORACLE = "p_click"
PURCHASE_ORACLE = "p_purchase"
TIMESTAMP = "event_timestamp"
OPTIONAL = (PURCHASE, ORACLE, PURCHASE_ORACLE)
ROW = "__row"
SOURCE = "source"
IMPRESSIONS, IMPLICIT, BASKETS = "impressions", "implicit", "baskets"
CHUNK_ROWS = 25_000

# (rows done, rows in all)
JoinProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class TrainingData:
    """The joined rows (features, labels, `weight`, `source`) and how they were made."""

    frame: pd.DataFrame
    info: dict[str, Any] = field(default_factory=dict)


def point_in_time_frame(
    store: Any,
    target: Target,
    contract: FeatureContract,
    rows: pd.DataFrame,
    progress: JoinProgress | None = None,
    chunk_rows: int = CHUNK_ROWS,
    join: AsOfJoin | None = None,
    engine: Literal["auto", "feast"] = "auto",
) -> pd.DataFrame:
    """`rows` (user, candidate, event_timestamp, request fields, anything else) with the
    contract's features as of each row's timestamp, sorted by (time, user, candidate).

    Exactly the target's FeatureService, with Feast's point-in-time semantics: by
    scoring.trainer.asof_join (the views' tables read once; `join` reuses one across calls)
    when the service's views are Parquet tables, else (or with engine="feast") through Feast's
    `get_historical_features` in chunks of `chunk_rows` (a SparkSource repo, the Spark
    profile, always: its join runs in Spark). Missing values stay missing here and get the
    serving defaults (and indicators) from the contract.
    """
    entity_cols = [USER_JOIN_KEY, target.join_key, TIMESTAMP, *contract.request_fields]
    rows = rows.reset_index(drop=True)
    service = store.get_feature_service(contract.service)
    if engine == "auto" and (join is not None or supports(store, service)):
        # Only the rows' users and candidates are read from the views' tables.
        keys = (USER_JOIN_KEY, target.join_key)
        join = join or AsOfJoin(store, service, {k: rows[k] for k in keys})
        joined = join(rows[entity_cols], TIMESTAMP, progress)
        out = pd.concat([rows, joined[[c for c in contract.refs if c in joined.columns]]], axis=1)
        out[TIMESTAMP] = pd.to_datetime(out[TIMESTAMP], utc=True)
        return out.sort_values([TIMESTAMP, USER_JOIN_KEY, target.join_key], ignore_index=True)
    parts = []
    # Spark's timestamps are microseconds: nanoseconds would not fit its Arrow conversion.
    spark = feature_repo.on_spark(store)
    for start in range(0, max(len(rows), 1), chunk_rows):
        chunk = rows.iloc[start : start + chunk_rows]
        entity_df = chunk[entity_cols].assign(**{ROW: np.arange(start, start + len(chunk))})
        # Feast's file store keeps one row per (join keys seen so far, timestamp): rows of one
        # user at one time (a basket, a positive and its negatives) would collapse into one.
        # A distinct timestamp per row, nanoseconds apart (fewer than 10**9 rows a chunk),
        # selects the same whole-second snapshot rows, and no row is dropped. (Spark's join
        # keeps every row; microseconds apart there, fewer than 10**6 rows a chunk.)
        entity_df[TIMESTAMP] = pd.to_datetime(entity_df[TIMESTAMP], utc=True) + pd.to_timedelta(
            np.arange(len(chunk)), unit="us" if spark else "ns"
        )
        frame = store.get_historical_features(
            entity_df=entity_df, features=service, full_feature_names=True
        ).to_df()
        frame = frame.drop_duplicates(ROW).set_index(ROW).reindex(entity_df[ROW])
        frame = frame.drop(columns=[c for c in frame.columns if c in chunk.columns])
        kept = frame.dropna(how="all", subset=contract.refs).index
        lost = entity_df[~entity_df[ROW].isin(kept)]
        if len(lost):
            _refill(store, service, contract, frame, lost)
        parts.append(frame[[c for c in contract.refs if c in frame.columns]])
        if progress is not None:
            progress(min(start + chunk_rows, len(rows)), len(rows))
    joined = pd.concat(parts) if parts else pd.DataFrame(columns=contract.refs)
    out = pd.concat([rows, joined], axis=1)
    out[TIMESTAMP] = pd.to_datetime(out[TIMESTAMP], utc=True)
    return out.sort_values([TIMESTAMP, USER_JOIN_KEY, target.join_key], ignore_index=True)


def _refill(
    store: Any, service: Any, contract: FeatureContract, frame: pd.DataFrame, lost: pd.DataFrame
) -> None:
    """Fills rows Feast's file offline store dropped, one feature view at a time.

    It drops an event when one view's entity has only *later* rows (e.g. a user's first
    behaviour snapshot comes after the event), losing the other views' values too. Serving
    would answer such a request with that view's defaults and the others' values, so the row
    gets each stored view's values here, and each on-demand view is computed by its own
    function from its inputs read the same way (missing where a view had nothing).
    """
    logger.warning("feast dropped %d training rows; refilling them view by view", len(lost))
    cache: dict[str, pd.DataFrame] = {}

    def view_values(name: str, features: list[str]) -> pd.DataFrame:
        if name not in cache:
            view = store.get_feature_view(name)
            refs = [f"{name}:{f.name}" for f in view.features]
            part = store.get_historical_features(
                entity_df=lost, features=refs, full_feature_names=True
            ).to_df()
            cache[name] = part.drop_duplicates(ROW).set_index(ROW).reindex(lost[ROW])
        return cache[name][[f"{name}__{f}" for f in features]]

    for projection in service.feature_view_projections:
        try:
            store.get_feature_view(projection.name)
        except FeatureViewNotFoundException:
            odfv = store.get_on_demand_feature_view(projection.name)
            columns: dict[str, Any] = {}
            for source in odfv.source_feature_view_projections.values():
                names = [f.name for f in source.features]
                values = view_values(source.name, names)
                columns.update(zip(names, values.to_numpy().T, strict=True))
            for request in odfv.source_request_sources.values():
                columns.update({f.name: lost[f.name].to_numpy() for f in request.schema})
            out = odfv.feature_transformation.transform(pd.DataFrame(columns))
            prefix = projection.name_to_use()
            for f in projection.features:
                frame.loc[lost[ROW].to_numpy(), f"{prefix}__{f.name}"] = out[f.name].to_numpy()
            continue
        names = [f.name for f in projection.features]
        values = view_values(projection.name, names)
        refs = [f"{projection.name_to_use()}__{n}" for n in names]
        frame.loc[lost[ROW].to_numpy(), refs] = values.to_numpy()


def _impressions(labels: Path, target: Target, contract: FeatureContract) -> pd.DataFrame:
    impressions = pd.read_parquet(labels)
    keep = [USER_JOIN_KEY, target.join_key, TIMESTAMP, *contract.request_fields, LABEL]
    missing = [c for c in keep if c not in impressions.columns]
    if missing:
        raise TrainingDataError(f"{labels}: missing columns {missing}")
    keep += [c for c in OPTIONAL if c in impressions.columns]
    return impressions[keep].assign(**{WEIGHT: 1.0, SOURCE: IMPRESSIONS})


def training_data(
    store: Any,
    target: Target,
    contract: FeatureContract,
    labels: Path,
    implicit: ImplicitFeedbackSettings | None,
    holdout: Holdout = "none",
    progress: JoinProgress | None = None,
    baskets: BasketExamplesSettings | None = None,
) -> TrainingData:
    """The target's training rows from its sources (module docstring), features joined.

    Args:
        labels: the target's labelled impressions (data/impressions_<kind>.parquet).
        implicit: the target's implicit-feedback settings; None: impressions only.
        holdout: leave out what `scoring evaluate --protocol loo|time|basket` holds out.
        baskets: the basket examples' settings (a target with a cart feature service);
            the defaults when None.

    Raises:
        TrainingDataError: no usable source; the message says what each one lacks.
    """
    data_dir = labels.parent
    if target.cart_feature_service is not None:
        return _basket_data(
            store,
            target,
            contract,
            data_dir,
            baskets or BasketExamplesSettings(),
            holdout,
            progress,
        )
    n_impressions = labelled_impressions(labels)
    mode = implicit.mode if implicit is not None else IMPRESSIONS
    use_impressions = n_impressions > 0 and mode != IMPLICIT
    use_implicit = implicit is not None and (
        mode in (IMPLICIT, "both") or (mode == "auto" and n_impressions < implicit.min_impressions)
    )
    parts: list[pd.DataFrame] = []
    info: dict[str, Any] = {"mode": mode, "holdout": holdout}
    why: list[str] = []
    if use_impressions:
        rows = _impressions(labels, target, contract)
        if holdout != "none":
            ends = holdout_ends(_interactions(data_dir), holdout)
            rows = rows[before_holdout(rows[USER_JOIN_KEY], rows[TIMESTAMP], ends)]
        info[IMPRESSIONS] = {"file": str(labels), "rows": len(rows)}
        parts.append(rows)
    else:
        why.append(
            f"{labels} has no labelled impressions (the log has no {target.kind.value} impressions)"
            if n_impressions == 0
            else f"impressions are not used (mode {mode})"
        )
    if use_implicit:
        assert implicit is not None
        try:
            examples = implicit_examples(data_dir, implicit, holdout)
        except TrainingDataError as exc:
            why.append(f"implicit feedback: {exc}")
        else:
            rows = examples.rows
            if not use_impressions and (rows[PURCHASE] == rows[LABEL]).all():
                rows = rows.drop(columns=[PURCHASE])  # every positive is a purchase: one task
            info[IMPLICIT] = {**examples.stats, "settings": implicit.model_dump()}
            parts.append(rows.assign(**{SOURCE: IMPLICIT}))
    elif implicit is None:
        why.append(f"implicit feedback is not configured for {target.name}")
    if not parts or sum(len(p) for p in parts) == 0:
        raise TrainingDataError(f"{target.name}: nothing to train on: " + "; ".join(why))
    rows = pd.concat(parts, ignore_index=True)
    if PURCHASE in rows.columns and rows[PURCHASE].isna().any():
        rows = rows.drop(columns=[PURCHASE])  # one source has no purchase label: click only
    rows["request_ts"] = pd.to_datetime(rows[TIMESTAMP], utc=True).astype("int64") // 10**9
    frame = point_in_time_frame(store, target, contract, rows, progress)
    return TrainingData(frame, info)


def _basket_data(
    store: Any,
    target: Target,
    contract: FeatureContract,
    data_dir: Path,
    settings: BasketExamplesSettings,
    holdout: Holdout,
    progress: JoinProgress | None,
) -> TrainingData:
    """A basket target's rows: basket examples (scoring.trainer.baskets), features joined."""
    try:
        examples = basket_examples(data_dir, settings, holdout)
    except TrainingDataError as exc:
        raise TrainingDataError(f"{target.name}: nothing to train on: {exc}") from None
    rows = examples.rows.assign(**{SOURCE: BASKETS})
    missing = [f for f in contract.request_fields if f not in rows.columns]
    if missing:
        raise TrainingDataError(
            f"{target.name}: {contract.service} asks for request fields {missing} that basket "
            "examples do not carry"
        )
    info: dict[str, Any] = {
        "mode": BASKETS,
        "holdout": holdout,
        BASKETS: {**examples.stats, "settings": settings.model_dump()},
    }
    return TrainingData(point_in_time_frame(store, target, contract, rows, progress), info)


def _interactions(data_dir: Path) -> pd.DataFrame:
    try:
        return load_interactions(data_dir, PositiveEvents())
    except EventLogMissingError as exc:
        raise TrainingDataError(f"holdout needs the event log: {exc}") from None


def split_sources(frame: pd.DataFrame, test_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on the earlier rows, test on the later ones (module docstring for two sources)."""
    sources = set(frame[SOURCE]) if SOURCE in frame.columns else set()
    if len(sources) < 2:
        cut = frame[TIMESTAMP].quantile(1.0 - test_fraction)
        return frame[frame[TIMESTAMP] < cut], frame[frame[TIMESTAMP] >= cut]
    # Impressions (offline or served) are what a ranker is tested on.
    shown = frame[SOURCE].isin((IMPRESSIONS, "served"))
    cut = frame.loc[shown, TIMESTAMP].quantile(1.0 - test_fraction)
    return frame[frame[TIMESTAMP] < cut], frame[shown & (frame[TIMESTAMP] >= cut)]


__all__ = [
    "BASKETS",
    "CHUNK_ROWS",
    "IMPLICIT",
    "IMPRESSIONS",
    "KIND",
    "LABEL",
    "SOURCE",
    "WEIGHT",
    "TrainingData",
    "point_in_time_frame",
    "split_sources",
    "training_data",
]
