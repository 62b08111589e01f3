"""Training rows from what the platform served: the served-feature log joined with Feedback.

Each candidate a Rank response returned (rank > 0) in the served-feature log is an impression,
with the exact model input it was scored on. Its label is the click or purchase that came back
through the `Feedback` RPC for that request and candidate within the attribution window. The
rows carry the contract's feature values (`FeatureContract.disassemble` of the served matrix),
so they go through the same assembly, fit and evaluation as the offline rows, and training sees
exactly what serving saw: no training/serving skew for them.

The log's `user_id` is the keyed hash of the user (SCORING_PRIVACY__FEATURE_LOG_HASH, the
default): the features come from the logged input, so the user is only a grouping key here
(per-user metrics); a log without the column groups by request.

Only rows served with the target's current schema hash can be used (another hash is another
column layout); degraded answers (features timed out, so defaults were scored) are left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from scoring.core.contract import FeatureContract
from scoring.core.served_events import read_events
from scoring.core.targets import USER_JOIN_KEY, Target
from scoring.trainer.examples import (
    LABEL,
    ORACLE,
    PURCHASE,
    PURCHASE_ORACLE,
    SOURCE,
    TIMESTAMP,
    WEIGHT,
    TrainingData,
)
from scoring.trainer.implicit import TrainingDataError

logger = logging.getLogger(__name__)

SERVED = "served"  # the `source` of these rows


@dataclass(frozen=True, slots=True)
class Attribution:
    """How long after serving a Feedback event still counts for the impression (seconds).

    The defaults are the offline labels' (an impression is clicked when the click follows
    within 30 minutes, purchased when the purchase follows within 24 hours).
    """

    click_s: float = 30 * 60
    purchase_s: float = 24 * 3600


@dataclass(frozen=True, slots=True)
class ServedLog:
    """Where the gateway logged what it served and the Feedback on it, and how to use them.

    Attributes:
        only: train on the served impressions alone (else beside the offline sources).
    """

    feature_log_dir: Path
    events_dir: Path
    only: bool = False
    attribution: Attribution = Attribution()


@dataclass(frozen=True, slots=True)
class ServedRows:
    """Labelled served impressions and what was left out.

    Attributes:
        frame: user_id, the candidate's join key, event_timestamp (served at), request_ts,
            clicked, purchased, request_id, and every contract feature by its ref.
        other_schema: served rows left out because their schema hash is not the contract's.
        degraded: served rows left out because their answer was degraded.
    """

    frame: pd.DataFrame
    other_schema: int
    degraded: int


def read_served(feature_log_dir: Path, target: str) -> pd.DataFrame:
    """Every served-feature log row of `target` (all days), or an empty frame."""
    files = sorted((feature_log_dir / f"target={target}").glob("date=*/part-*.parquet"))
    if not files:
        return pd.DataFrame()
    # File by file: the folder names are partitions that the files do not hold as columns.
    return pd.concat([pq.ParquetFile(f).read().to_pandas() for f in files], ignore_index=True)


def served_rows(
    feature_log_dir: Path,
    events_dir: Path,
    target: Target,
    contract: FeatureContract,
    attribution: Attribution = Attribution(),
) -> ServedRows:
    """The served impressions of `target` as labelled training rows (see the module doc)."""
    served = read_served(feature_log_dir, target.name)
    if served.empty:
        return ServedRows(_empty(target, contract), 0, 0)
    shown = served[served["rank"] > 0]
    same = shown["schema_hash"] == contract.schema_hash
    degraded = shown["degraded"].astype(bool)
    keep = shown[same & ~degraded].drop_duplicates(["request_id", "candidate_id"])
    other, bad = int((~same).sum()), int((same & degraded).sum())
    if other:
        logger.warning(
            "%s: %d served rows have another schema than %s; left out",
            target.name,
            other,
            contract.schema_hash,
        )
    if keep.empty:
        return ServedRows(_empty(target, contract), other, bad)

    served_at = pd.to_datetime(keep["served_at"], utc=True)
    seconds = (served_at - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    labels = _labels(events_dir, keep, seconds, attribution)
    matrix = np.stack(keep["features"].to_numpy()).astype(np.float32)
    frame = pd.DataFrame(
        {
            USER_JOIN_KEY: keep["user_id" if "user_id" in keep else "request_id"].to_numpy(),
            target.join_key: keep["candidate_id"].to_numpy(),
            TIMESTAMP: served_at.to_numpy(),
            "request_ts": seconds.astype(np.int64),
            LABEL: labels[:, 0],
            PURCHASE: labels[:, 1],
            "request_id": keep["request_id"].to_numpy(),
        }
    )
    frame = pd.concat([frame, contract.disassemble(matrix)], axis=1)
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    return ServedRows(frame.assign(**{SOURCE: SERVED, WEIGHT: 1.0}), other, bad)


def _labels(
    events_dir: Path, rows: pd.DataFrame, served_s: np.ndarray, attribution: Attribution
) -> np.ndarray:
    """[rows, 2] int: clicked, purchased within the attribution windows after serving."""
    out = np.zeros((len(rows), 2), dtype=np.int64)
    feedback = pd.DataFrame(read_events(events_dir, "feedback"))
    if feedback.empty:
        return out
    index = pd.MultiIndex.from_arrays([rows["request_id"], rows["candidate_id"]])
    for col, (kind, window) in enumerate(
        (("click", attribution.click_s), ("purchase", attribution.purchase_s))
    ):
        events = feedback[feedback["type"] == kind]
        if events.empty:
            continue
        # The first event of each (request, candidate); a retried Feedback counts once.
        first = events.groupby(["request_id", "candidate_id"])["at"].min()
        at = first.reindex(index).to_numpy(dtype=np.float64)
        delay = at - served_s
        out[:, col] = (delay >= 0) & (delay <= window)
    return out


def _empty(target: Target, contract: FeatureContract) -> pd.DataFrame:
    columns = [USER_JOIN_KEY, target.join_key, TIMESTAMP, "request_ts", LABEL, PURCHASE]
    return pd.DataFrame(columns=[*columns, "request_id", *contract.refs, SOURCE, WEIGHT])


def with_served(
    data: TrainingData, log: ServedLog, target: Target, contract: FeatureContract
) -> TrainingData:
    """`data` with the served impressions added (or alone, `log.only`); the manifest's
    `training.sources` records how many came from the log and how many were left out."""
    rows = served_rows(log.feature_log_dir, log.events_dir, target, contract, log.attribution)
    info = {
        **data.info,
        SERVED: {
            "feature_log": str(log.feature_log_dir),
            "events": str(log.events_dir),
            "rows": len(rows.frame),
            "clicks": int(rows.frame[LABEL].sum()) if len(rows.frame) else 0,
            "left_out_other_schema": rows.other_schema,
            "left_out_degraded": rows.degraded,
            "attribution_s": {
                "click": log.attribution.click_s,
                "purchase": log.attribution.purchase_s,
            },
        },
    }
    if rows.frame.empty:
        if log.only or data.frame.empty:
            raise TrainingDataError(
                f"{target.name}: no served impressions under {log.feature_log_dir} with schema "
                f"{contract.schema_hash} ({rows.other_schema} with another schema, "
                f"{rows.degraded} degraded); serve the current contract first"
            )
        return TrainingData(data.frame, info)
    served = rows.frame.drop(columns=["request_id"])
    frame = served if data.frame.empty else pd.concat([data.frame, served], ignore_index=True)
    # The synthetic oracle exists only for offline impressions: keep it only where it is whole.
    for col in (ORACLE, PURCHASE_ORACLE):
        if col in frame.columns and frame[col].isna().any():
            frame = frame.drop(columns=[col])
    if PURCHASE in frame.columns and frame[PURCHASE].isna().any():
        frame = frame.drop(columns=[PURCHASE])  # one source has no purchase label: click only
    frame[TIMESTAMP] = pd.to_datetime(frame[TIMESTAMP], utc=True)
    frame = frame.sort_values([TIMESTAMP, USER_JOIN_KEY, target.join_key], ignore_index=True)
    return TrainingData(frame, info)
