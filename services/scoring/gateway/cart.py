"""The cart of a complete-the-basket request: what the gateway reads for the cart's items (a
target's `cart_feature_service`, e.g. basket_cart_v1), the request values the basket model's
on-demand features take from it, and the candidates it proposes when the request has none.

The cart's feature service holds, per item, its code and category code (the numbers the model's
`cart_context` request fields carry) and its co-purchase neighbours: `cp_id_00..` (item ids, by
smoothed lift) with `cp_count_00..` (baskets holding both). `CartLayout` finds them by feature
name in whichever view provides them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from scoring.core.errors import ContractMismatchError
from scoring.core.targets import CART_CATEGORY_FIELDS, CART_ITEM_FIELDS, CART_SIZE_FIELD
from scoring.gateway.read_plan import OnlineFeatures

CODE_FEATURE = "item_code"
CATEGORY_FEATURE = "category_code"
NEIGHBOUR_ID_PREFIX = "cp_id_"
NEIGHBOUR_COUNT_PREFIX = "cp_count_"
# A cart slot with no item, or an item the store does not know (the features' own convention).
UNKNOWN_CODE = -1.0


def _short(full_name: str) -> str:
    """`<view>__<feature>` -> `<feature>`."""
    return full_name.rsplit("__", 1)[-1]


def _number(value: Any) -> float | None:
    """A stored number, or None when missing (None, NaN, not a number)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if number != number else number


@dataclass(frozen=True, slots=True)
class CartLayout:
    """Where a cart feature service keeps what the gateway reads (full feature names).

    Attributes:
        service: the FeatureService.
        code: the items' code (`item_code`).
        category: the items' category code (`category_code`).
        neighbours: per neighbour slot, its id and co-purchase count features, in slot order.
    """

    service: str
    code: str
    category: str
    neighbours: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, service: str, stored: Sequence[str]) -> CartLayout:
        """The layout of `service` from its stored features (`FeatureSource.stored_features`).

        Raises:
            ContractMismatchError: a feature the gateway reads is not in the service.
        """
        by_name: dict[str, str] = {}
        for full in stored:
            by_name.setdefault(_short(full), full)
        missing = [name for name in (CODE_FEATURE, CATEGORY_FEATURE) if name not in by_name]
        slots = sorted(name for name in by_name if name.startswith(NEIGHBOUR_ID_PREFIX))
        if not slots:
            missing.append(f"{NEIGHBOUR_ID_PREFIX}00")
        neighbours = []
        for id_name in slots:
            count_name = NEIGHBOUR_COUNT_PREFIX + id_name.removeprefix(NEIGHBOUR_ID_PREFIX)
            if count_name not in by_name:
                missing.append(count_name)
            else:
                neighbours.append((by_name[id_name], by_name[count_name]))
        if missing:
            raise ContractMismatchError(
                f"feature service {service}: no feature {', '.join(missing)}; a cart's feature "
                f"service must hold {CODE_FEATURE}, {CATEGORY_FEATURE} and the co-purchase "
                f"neighbours {NEIGHBOUR_ID_PREFIX}NN with {NEIGHBOUR_COUNT_PREFIX}NN"
            )
        return cls(
            service,
            by_name[CODE_FEATURE],
            by_name[CATEGORY_FEATURE],
            tuple(neighbours),
        )


def cart_values(
    layout: CartLayout | None, cart_item_ids: Sequence[str], read: OnlineFeatures | None
) -> dict[str, float]:
    """The request values of a cart (core.targets' CART_* fields): the first CART_SLOTS cart
    items' codes and category codes (UNKNOWN_CODE for an empty slot, an item the store does not
    know, or when the cart could not be read: `read` None), and the number of cart items.

    Args:
        layout: the cart service's layout (None: nothing was read).
        cart_item_ids: the request's cart, in its order.
        read: the read of `layout.service` for `cart_item_ids`, one row per item in that order.
    """
    values: dict[str, float] = {CART_SIZE_FIELD: float(len(cart_item_ids))}
    codes = read.columns.get(layout.code) if read is not None and layout is not None else None
    categories = (
        read.columns.get(layout.category) if read is not None and layout is not None else None
    )
    for k, (item_field, category_field) in enumerate(
        zip(CART_ITEM_FIELDS, CART_CATEGORY_FIELDS, strict=True)
    ):
        code = category = None
        if k < len(cart_item_ids):
            code = _number(codes[k]) if codes is not None else None
            category = _number(categories[k]) if categories is not None else None
        values[item_field] = UNKNOWN_CODE if code is None else code
        values[category_field] = UNKNOWN_CODE if category is None else category
    return values


def propose(
    layout: CartLayout, cart_item_ids: Sequence[str], read: OnlineFeatures, limit: int
) -> tuple[str, ...]:
    """Candidates for a cart: its items' co-purchase neighbours, by co-purchase count summed over
    the cart's items (ties: the order met, cart item by cart item, each one's neighbours in slot
    order), leaving out the cart's own items; at most `limit`.

    Args:
        read: the read of `layout.service` for `cart_item_ids`, one row per item in that order.
    """
    cart = set(cart_item_ids)
    totals: dict[str, float] = {}  # insertion order: the order met
    columns = read.columns
    for row in range(len(cart_item_ids)):
        for id_name, count_name in layout.neighbours:
            neighbour = columns[id_name][row]
            if not neighbour or not isinstance(neighbour, str) or neighbour in cart:
                continue
            count = _number(columns[count_name][row]) or 0.0
            totals[neighbour] = totals.get(neighbour, 0.0) + count
    order = sorted(totals, key=lambda item: -totals[item])  # stable: ties keep the order met
    return tuple(order[:limit])
