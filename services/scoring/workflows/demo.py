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


def demo_cart(repo_path: Path) -> tuple[list[str], str]:
    """A cart to complete in the demo: the newest basket of three or more items without its
    last item, and that item (where the model should rank it)."""
    import pandas as pd

    events = pd.read_parquet(
        repo_path / "data" / "events.parquet", columns=["event_type", "item_id", "order_id"]
    )
    bought = events[(events["event_type"] == "purchase") & (events["order_id"] != "")]
    bought = bought.drop_duplicates(["order_id", "item_id"])
    sizes = bought.groupby("order_id", sort=False).size()
    big = sizes[sizes >= 3]
    if big.empty:
        big = sizes[sizes >= 2]
    if big.empty:
        return [], ""
    basket = bought.loc[bought["order_id"] == big.index[-1], "item_id"].tolist()
    return basket[:-1], basket[-1]


def demo_bundles(repo_path: Path, count: int = 12) -> list[str]:
    """Bundles to rank in the demo: mostly available ones, and any with an unavailable item
    (the business filter drops and reports them)."""
    import pandas as pd

    path = repo_path / "data" / "bundle_stats.parquet"
    if not path.exists():
        return []
    stats = pd.read_parquet(path, columns=["bundle_id", "all_in_stock"])
    stats = stats.drop_duplicates("bundle_id", keep="last")
    available = stats["all_in_stock"] == 1
    return (
        sorted(stats.loc[available, "bundle_id"])[: count - 2]
        + sorted(stats.loc[~available, "bundle_id"])[:2]
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
    cart: list[str]
    held_out: str
    basket: pb.RankResponse | None
    bundles: pb.RankResponse | None


def demo_requests(settings: Settings, address: str, n_items: int, now: int) -> DemoAnswers:
    """Ranks products and campaigns for a known user, clicks its top product (feedback), ranks
    for a brand-new user with a brand-new product, completes a basket (the gateway proposes the
    candidates from the cart's co-purchases) and ranks bundles."""
    from scoring.client import RankingClient

    items = demo_items(n_items)
    activities = demo_activities(settings.feast.repo_path, now)
    user, item, activity = "u_000042", CandidateKind.ITEM, CandidateKind.ACTIVITY
    with RankingClient.for_settings(settings, address) as client:
        products = client.rank(user, items, item, top_k=5, timestamp_s=now)
        accepted = client.feedback(products.request_id, products.candidates[0].id, "click")
        campaigns = client.rank(user, activities, activity, top_k=5, timestamp_s=now)
        newcomer = client.rank("new_user_1", [*items[:4], "i_new_sku"], item, top_k=5)
        cart, held_out = demo_cart(settings.feast.repo_path)
        basket = client.rank(user, [], item, timestamp_s=now, cart=cart) if cart else None
        bundle_ids = demo_bundles(settings.feast.repo_path)
        bundles = (
            client.rank(user, bundle_ids, CandidateKind.BUNDLE, top_k=5, timestamp_s=now)
            if bundle_ids
            else None
        )
    return DemoAnswers(
        items, activities, products, accepted, campaigns, newcomer, cart, held_out, basket, bundles
    )
