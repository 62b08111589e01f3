"""Item (product / SKU) features: catalogue and daily statistics, and a text embedding."""

from datetime import timedelta
from functools import partial

from feast.types import Float32, Float64, Int64

from defaults import feature, table_view, vector
from entities import item

item_view = partial(table_view, entity=item, owner="catalog")

# Catalogue attributes and daily aggregates: one row when the item is created (aggregates 0),
# then one per midnight. A brand-new item has its category, brand and price at once.
_stats = [
    feature("category", Int64, default=-1, description="category code (data/vocab.json)"),
    feature("brand", Int64, default=-1, description="brand code (data/vocab.json)"),
    feature("price", Float32, default=0.0),
    feature("launch_ts", Float64, default=0.0, description="creation, Unix seconds"),
    feature("rating", Float32, default=3.5),
    feature("in_stock", Int64, default=1),
    feature("purchases_total", Float32, default=0.0),
    feature("impressions_7d", Float32, default=0.0),
    feature("clicks_7d", Float32, default=0.0),
    feature("ctr_7d", Float32, default=0.05),
    feature("ctr_30d", Float32, default=0.05),
    feature("sales_7d", Float32, default=0.0),
    feature("sales_30d", Float32, default=0.0),
    feature("conversion_30d", Float32, default=0.02),
    feature("cart_rate_30d", Float32, default=0.1, description="add-to-carts / views"),
]
item_stats = item_view("item_stats", ttl=timedelta(days=2), schema=_stats)

# all-MiniLM-L6-v2 of "title. description", PCA to 16 dims (scoring.datagen.embedding):
# brand-new items have it before they have any statistics (cold start).
_embedding = [vector("embedding", 16, default=0.0, description="text embedding, PCA 16")]
item_embedding = item_view("item_embedding", ttl=timedelta(days=3650), schema=_embedding)
