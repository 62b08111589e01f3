"""The demo's own steps: its data size, the candidates it ranks and its requests."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from scoring.core.settings import Settings
from scoring.core.targets import CandidateKind

if TYPE_CHECKING:
    from scoring.api.v1 import scoring_pb2 as pb
    from scoring.datagen.synthetic import SyntheticConfig


def demo_data_config(users: int) -> SyntheticConfig:
    """The demo's data set for `users` users: items, campaigns and impressions scale with it."""
    from scoring.datagen.synthetic import SyntheticConfig

    return SyntheticConfig(
        users, max(users // 2, 50), max(users // 16, 20), users * 40, users * 40, 35, seed=7
    )


def demo_activities(repo_path: Path, now: int, running: int = 10, ended: int = 2) -> list[str]:
    """Campaigns to rank in the demo: some still running at `now`, and a couple that have ended
    (the business filter drops and reports them)."""
    import pandas as pd

    stats = pd.read_parquet(
        repo_path / "data" / "activity_stats.parquet", columns=["activity_id", "end_ts"]
    ).drop_duplicates("activity_id", keep="last")
    live = stats["end_ts"] > now
    return (
        sorted(stats.loc[live, "activity_id"])[:running]
        + sorted(stats.loc[~live, "activity_id"])[:ended]
    )


def demo_items(n_items: int, count: int = 20) -> list[str]:
    """`count` products spread over the catalogue's ids."""
    step = max(n_items // count, 1)
    return [f"i_{i:06d}" for i in range(0, step * count, step)]


@dataclass(frozen=True, slots=True)
class DemoAnswers:
    """The demo's requests (candidates asked for) and what the gateway answered."""

    items: list[str]
    activities: list[str]
    products: pb.RankResponse
    feedback_accepted: int
    campaigns: pb.RankResponse
    newcomer: pb.RankResponse


def demo_requests(settings: Settings, address: str, n_items: int, now: int) -> DemoAnswers:
    """Ranks products and campaigns for a known user, clicks its top product (feedback), and
    ranks for a brand-new user with a brand-new product."""
    from scoring.client import RankingClient

    items = demo_items(n_items)
    activities = demo_activities(settings.feast.repo_path, now)
    user, item, activity = "u_000042", CandidateKind.ITEM, CandidateKind.ACTIVITY
    with RankingClient.for_settings(settings, address) as client:
        products = client.rank(user, items, item, top_k=5, timestamp_s=now)
        accepted = client.feedback(products.request_id, products.candidates[0].id, "click")
        campaigns = client.rank(user, activities, activity, top_k=5, timestamp_s=now)
        newcomer = client.rank("new_user_1", [*items[:4], "i_new_sku"], item, top_k=5)
    return DemoAnswers(items, activities, products, accepted, campaigns, newcomer)
