"""The served-event log's schema: what a gateway records per request, shadow score and feedback,
where it lies on disk, and how it is read back (`scoring experiments report`).

Layout: `<dir>/<kind>/<YYYY-MM-DD>/<instance>.jsonl`, one JSON object per line, one file per
gateway process and day (several gateways never write into the same file). The writer is the
gateway's (scoring.gateway.event_writer).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, NotRequired, TypedDict, overload

Kind = Literal["request", "shadow", "feedback"]
KINDS: tuple[Kind, ...] = ("request", "shadow", "feedback")
FeedbackType = Literal["click", "purchase"]


class RequestEvent(TypedDict):
    """One answered Rank request."""

    request_id: str
    at: float  # Unix seconds
    target: str
    arm: str  # production, canary, unmanaged or fallback
    version: str  # "" when the popularity fallback answered
    user: str  # hashed user id
    candidates: int
    returned: list[str]  # candidate ids, in the order returned
    scores: list[float]  # of `returned`, in the same order
    latency_ms: float
    degraded: bool


class ShadowEvent(TypedDict):
    """A shadow version's scores of a request, next to the served version's."""

    request_id: str
    at: float
    target: str
    version: str
    primary_version: str
    candidate_ids: list[str]
    scores: list[float]  # of `candidate_ids`
    primary_scores: list[float]
    latency_ms: float


class FeedbackEvent(TypedDict):
    """A click or purchase on a candidate a Rank response returned."""

    request_id: str
    candidate_id: str
    type: FeedbackType
    at: float
    # False when the gateway that took it had not served `request_id` lately (another replica
    # or an earlier run may have); absent in logs written before it was recorded.
    matched: NotRequired[bool]


def event_file(directory: Path, kind: Kind, day: str, instance_id: str) -> Path:
    """The file that one gateway instance appends `kind` events of `day` (YYYY-MM-DD) to."""
    return directory / kind / day / f"{instance_id}.jsonl"


@overload
def read_events(directory: Path, kind: Literal["request"]) -> list[RequestEvent]: ...
@overload
def read_events(directory: Path, kind: Literal["shadow"]) -> list[ShadowEvent]: ...
@overload
def read_events(directory: Path, kind: Literal["feedback"]) -> list[FeedbackEvent]: ...
def read_events(directory: Path, kind: Kind) -> list[Any]:
    """Every event of `kind` under `directory` (all instances and days); a torn last line of a
    file that is being written is skipped."""
    events: list[dict[str, Any]] = []
    for path in sorted(directory.glob(str(event_file(Path(), kind, "*", "*")))):
        for line in path.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events
