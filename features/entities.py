"""The entities of the platform, all keyed by string ids."""

from feast import Entity, ValueType

user = Entity(
    name="user", join_keys=["user_id"], value_type=ValueType.STRING, description="A shopper."
)
item = Entity(
    name="item", join_keys=["item_id"], value_type=ValueType.STRING, description="A product (SKU)."
)
activity = Entity(
    name="activity",
    join_keys=["activity_id"],
    value_type=ValueType.STRING,
    description="A campaign, promotion or bundle.",
)
bundle = Entity(
    name="bundle",
    join_keys=["bundle_id"],
    value_type=ValueType.STRING,
    description="A named set of items sold together at a bundle price.",
)
