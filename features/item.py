"""Item (product) features: catalogue attributes and popularity."""

from datetime import timedelta

from feast import FeatureView, FileSource
from feast.types import Float32, Int64

from defaults import feature
from entities import item

item_stats_source = FileSource(
    name="item_stats_source",
    path="data/item_stats.parquet",
    timestamp_field="event_timestamp",
)

item_stats = FeatureView(
    name="item_stats",
    entities=[item],
    ttl=timedelta(days=14),
    schema=[
        feature("category", Int64, default=-1),
        feature("price", Float32, default=0.0),
        feature("rating", Float32, default=3.5),
        feature("ctr_7d", Float32, default=0.05),
        feature("sales_7d", Float32, default=0.0),
        feature("in_stock", Int64, default=1),
    ],
    source=item_stats_source,
    online=True,
    tags={"owner": "catalog"},
)
