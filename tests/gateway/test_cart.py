"""The cart of a complete-the-basket request: the layout of its feature service, the request
values the basket model takes from it, and the candidates proposed from its neighbours."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from scoring.core.errors import ContractMismatchError
from scoring.core.targets import CART_CATEGORY_FIELDS, CART_ITEM_FIELDS, CART_SIZE_FIELD, CART_SLOTS
from scoring.gateway.cart import UNKNOWN_CODE, CartLayout, cart_values, propose
from scoring.gateway.read_plan import OnlineFeatures

VIEW = "item_copurchase"
SLOTS = 3


def stored(slots: int = SLOTS) -> list[str]:
    names = ["item_code", "category_code"]
    names += [f"cp_id_{k:02d}" for k in range(slots)]
    names += [f"cp_count_{k:02d}" for k in range(slots)]
    return [f"{VIEW}__{name}" for name in names]


LAYOUT = CartLayout.of("basket_cart_v1", stored())


def read(rows: Sequence[dict[str, Any] | None]) -> OnlineFeatures:
    """A read of the cart's rows (None: an item the store does not know)."""
    columns: dict[str, list[Any]] = {name: [] for name in stored()}
    for row in rows:
        for name in stored():
            short = name.removeprefix(f"{VIEW}__")
            columns[name].append(None if row is None else row.get(short))
    return OnlineFeatures(columns, {VIEW: 60.0}, {VIEW: 0})


def neighbours(*pairs: tuple[str, float | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, (item, count) in enumerate(pairs):
        out[f"cp_id_{k:02d}"], out[f"cp_count_{k:02d}"] = item, count
    return out


def test_the_layout_pairs_neighbour_ids_with_their_counts() -> None:
    assert LAYOUT.code == f"{VIEW}__item_code"
    assert LAYOUT.category == f"{VIEW}__category_code"
    assert LAYOUT.neighbours == tuple(
        (f"{VIEW}__cp_id_{k:02d}", f"{VIEW}__cp_count_{k:02d}") for k in range(SLOTS)
    )


def test_a_cart_service_without_what_the_gateway_reads_is_refused() -> None:
    lacking = [n for n in stored() if not n.endswith(("category_code", "cp_count_01"))]
    with pytest.raises(ContractMismatchError) as info:
        CartLayout.of("basket_cart_v1", lacking)
    assert info.value.message.startswith(
        "feature service basket_cart_v1: no feature category_code, cp_count_01; "
    )
    with pytest.raises(ContractMismatchError, match="no feature cp_id_00"):
        CartLayout.of("s", [f"{VIEW}__item_code", f"{VIEW}__category_code"])


def test_cart_values_fill_the_slots_in_cart_order_and_mark_the_unknown() -> None:
    cart = ("a", "b", "nope", "c")
    rows: list[dict[str, Any] | None] = [
        {"item_code": 11.0, "category_code": 3.0},
        {"item_code": 12.0, "category_code": None},  # a category the vocabulary lacks
        None,  # an item the store does not know
        {"item_code": 13.0, "category_code": float("nan")},
    ]
    values = cart_values(LAYOUT, cart, read(rows))
    assert values[CART_SIZE_FIELD] == 4.0
    codes = [values[f] for f in CART_ITEM_FIELDS]
    categories = [values[f] for f in CART_CATEGORY_FIELDS]
    assert codes == [11.0, 12.0, UNKNOWN_CODE, 13.0] + [UNKNOWN_CODE] * (CART_SLOTS - 4)
    assert categories == [3.0] + [UNKNOWN_CODE] * (CART_SLOTS - 1)
    assert len(values) == 2 * CART_SLOTS + 1


def test_cart_values_beyond_the_slots_count_in_the_size_only() -> None:
    cart = tuple(f"i{k}" for k in range(CART_SLOTS + 5))
    rows: list[dict[str, Any] | None] = [
        {"item_code": float(k), "category_code": 1.0} for k in range(len(cart))
    ]
    values = cart_values(LAYOUT, cart, read(rows))
    assert values[CART_SIZE_FIELD] == CART_SLOTS + 5
    assert [values[f] for f in CART_ITEM_FIELDS] == [float(k) for k in range(CART_SLOTS)]


def test_an_unread_or_empty_cart_is_all_unknown() -> None:
    unread = cart_values(LAYOUT, ("a", "b"), None)  # the cart read failed
    assert unread[CART_SIZE_FIELD] == 2.0
    assert {unread[f] for f in (*CART_ITEM_FIELDS, *CART_CATEGORY_FIELDS)} == {UNKNOWN_CODE}
    empty = cart_values(LAYOUT, (), None)  # the basket target asked for without a cart
    assert empty[CART_SIZE_FIELD] == 0.0
    assert {empty[f] for f in (*CART_ITEM_FIELDS, *CART_CATEGORY_FIELDS)} == {UNKNOWN_CODE}


def test_proposals_rank_neighbours_by_summed_count_and_leave_the_cart_out() -> None:
    cart = ("a", "b", "unknown")
    rows = [
        neighbours(("x", 5.0), ("b", 9.0), ("y", 4.0)),  # b is in the cart
        neighbours(("y", 3.0), ("z", 6.0), ("", 0.0)),  # an empty slot
        None,
    ]
    # y: 4 + 3 = 7, z: 6, x: 5.
    assert propose(LAYOUT, cart, read(rows), limit=10) == ("y", "z", "x")
    assert propose(LAYOUT, cart, read(rows), limit=2) == ("y", "z")


def test_proposal_ties_keep_the_order_met_and_missing_counts_count_zero() -> None:
    rows = [neighbours(("p", 2.0), ("q", None)), neighbours(("r", 2.0), ("s", 1.0))]
    assert propose(LAYOUT, ("a", "b"), read(rows), limit=10) == ("p", "r", "s", "q")


def test_a_cart_of_unknown_items_proposes_nothing() -> None:
    assert propose(LAYOUT, ("a", "b"), read([None, None]), limit=10) == ()
