"""Model input layout derived from the feature contract: column kinds and explanation groups.

Only the contract is read (FeatureSpec view, entity, name, dtype), never hard-coded widths or
feature names, so new views and features land in a group by themselves:

- Int/Bool features are categorical (hashed embeddings), everything else numeric.
- Vector features (e.g. a text embedding) expand into several numeric columns.
- Columns the contract appends after the values (per-feature or per-column missing indicators)
  are numeric and belong to the group of the feature they describe.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from scoring.core.contract import FeatureContract, FeatureSpec

CATEGORICAL_DTYPES = frozenset({"Int32", "Int64", "Bool"})

# Canonical group order (the order of contrib__1's columns); groups not listed follow, sorted.
GROUP_ORDER = (
    "user_behavior",
    "user_profile",
    "item_popularity",
    "activity",
    "price",
    "affinity",
    "text",
    "context",
)


TEXT_TOKENS = frozenset({"text", "emb", "embedding", "similarity", "sim"})
PRICE_TOKENS = frozenset({"price", "discount"})
AFFINITY_TOKENS = frozenset({"match", "affinity"})


def _tokens(name: str) -> set[str]:
    """Words of a snake_case name: "text_emb_3" -> {"text", "emb", "3"}."""
    return set(re.split(r"[^a-z0-9]+", name.lower()))


def feature_group(spec: FeatureSpec) -> str:
    """The explanation group of one feature, from its view, entity and name.

    text: text embeddings and text similarity; price: what the candidate costs (price,
    price-to-spend ratios, discounts); affinity: user-candidate match features; then by entity
    (user profile / user behaviour / item popularity / activity, or the entity's own name for a
    new entity); request-time features without an entity are the request context.
    """
    view, name = _tokens(spec.view), _tokens(spec.name)
    if (view | name) & TEXT_TOKENS:
        return "text"
    if name & PRICE_TOKENS:
        return "price"
    if name & AFFINITY_TOKENS:
        return "affinity"
    if spec.entity == "user":
        return "user_profile" if "profile" in view else "user_behavior"
    if spec.entity == "item":
        return "item_popularity"
    if spec.entity is None:
        return "context"
    return spec.entity


def feature_groups(contract: FeatureContract) -> tuple[str, ...]:
    """The groups present in a contract, in canonical order: contrib__1's column names."""
    present = {feature_group(f) for f in contract.features}
    known = [g for g in GROUP_ORDER if g in present]
    return (*known, *sorted(present - set(GROUP_ORDER)))


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the model input matrix."""

    name: str
    group: str
    categorical: bool


def column_layout(
    contract: FeatureContract, width: int, vector_lengths: Mapping[str, int] | None = None
) -> tuple[Column, ...]:
    """Describes each of the `width` columns that `contract.assemble` produces.

    Args:
        contract: the feature contract.
        width: the assembled matrix's column count.
        vector_lengths: element count of vector-valued features, by full feature name.

    Raises:
        ValueError: the extra columns match neither per-feature nor per-column indicators.
    """
    lengths = vector_lengths or {}
    values: list[Column] = []
    owners: list[Column] = []
    for spec in contract.features:
        group = feature_group(spec)
        n = lengths.get(spec.ref, getattr(spec, "length", 1))
        categorical = n == 1 and spec.dtype in CATEGORICAL_DTYPES
        names = [spec.ref] if n == 1 else [f"{spec.ref}[{k}]" for k in range(n)]
        values += [Column(c, group, categorical) for c in names]
        owners.append(Column(spec.ref, group, False))
    extra = width - len(values)
    if extra == 0:
        return tuple(values)
    if extra == len(owners):
        described = owners
    elif extra == len(values):
        described = values
    else:
        raise ValueError(
            f"{contract.service}: {width} input columns, {len(values)} feature values and "
            f"{extra} extra columns that map to neither features nor values"
        )
    indicators = [Column(f"{c.name}:missing", c.group, False) for c in described]
    return (*values, *indicators)
