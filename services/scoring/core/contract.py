"""The feature contract between a model and the feature store, derived from a FeatureService.

A contract is the ordered list of features a model reads (the FeatureService's order), each
with its dtype, its declared default and the entity it belongs to. Its schema hash is stored
with every model version and checked by the gateway before a model is served.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from feast.errors import FeatureViewNotFoundException

from scoring.core.errors import ContractMismatchError

DEFAULT_TAG = "default"
NUMERIC_DTYPES = frozenset({"Int32", "Int64", "Float32", "Float64", "Bool"})


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One model input column.

    Attributes:
        view: feature view (or on-demand view) name.
        name: feature name inside the view.
        dtype: Feast dtype name, e.g. "Float32".
        default: value used when the store has none (unknown entity, expired, null).
        entity: entity the view is keyed by ("user", "item", ...); None for on-demand views.
    """

    view: str
    name: str
    dtype: str
    default: float
    entity: str | None

    @property
    def ref(self) -> str:
        """Full feature name as Feast returns it with full_feature_names=True."""
        return f"{self.view}__{self.name}"


@dataclass(frozen=True, slots=True)
class FeatureContract:
    """The ordered features of a FeatureService and the request fields its on-demand views need."""

    service: str
    features: tuple[FeatureSpec, ...]
    request_fields: tuple[str, ...]
    schema_hash: str

    @classmethod
    def build(
        cls, service: str, features: Sequence[FeatureSpec], request_fields: Sequence[str] = ()
    ) -> FeatureContract:
        """Builds a contract and computes its schema hash."""
        payload = [[f.ref, f.dtype, f.default] for f in features]
        digest = hashlib.sha256(json.dumps(payload, separators=(",", ":")).encode()).hexdigest()
        return cls(service, tuple(features), tuple(request_fields), digest[:16])

    @property
    def refs(self) -> list[str]:
        return [f.ref for f in self.features]

    @property
    def width(self) -> int:
        return len(self.features)

    def columns_of(self, entity: str) -> np.ndarray:
        """Indices of the columns that belong to `entity`'s feature views."""
        return np.array([i for i, f in enumerate(self.features) if f.entity == entity], dtype=int)

    def assemble(self, frame: pd.DataFrame | Mapping[str, Sequence[Any]]) -> Assembled:
        """Builds the float32 model input in contract order, filling missing values with defaults.

        Args:
            frame: feature values by full feature name (a DataFrame or column lists, as from
                Feast's `to_df()` / `to_dict()`); None / NaN mark a missing value.

        Returns:
            The matrix and the boolean mask of the values that were missing.
        """
        df = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(dict(frame))
        absent = [ref for ref in self.refs if ref not in df.columns]
        if absent:
            raise ContractMismatchError(
                f"feature service {self.service}: the store returned no column for {absent}"
            )
        values = df[self.refs].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
        missing = np.isnan(values)
        defaults = np.array([f.default for f in self.features], dtype=np.float64)
        filled = np.where(missing, defaults, values).astype(np.float32)
        return Assembled(np.ascontiguousarray(filled), missing)

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly description, stored in each model version's manifest."""
        return {
            "feature_service": self.service,
            "schema_hash": self.schema_hash,
            "request_fields": list(self.request_fields),
            "features": [
                {"ref": f.ref, "dtype": f.dtype, "default": f.default, "entity": f.entity}
                for f in self.features
            ],
        }


@dataclass(frozen=True, slots=True)
class Assembled:
    """A model input matrix [rows, features] and its missing-value mask."""

    matrix: np.ndarray
    missing: np.ndarray


def _parse_default(raw: str | None, where: str) -> float:
    if raw is None:
        raise ValueError(
            f"{where}: no default declared; declare one with features/defaults.py "
            "(feature(..., default=...) or view_defaults(...))"
        )
    return float(raw)


def contract_from_store(store: Any, service_name: str) -> FeatureContract:
    """Reads a FeatureService from the Feast registry and turns it into a contract.

    Args:
        store: a `feast.FeatureStore`.
        service_name: the FeatureService's name, e.g. "item_ranker_v1".
    """
    service = store.get_feature_service(service_name)
    specs: list[FeatureSpec] = []
    request_fields: list[str] = []
    for projection in service.feature_view_projections:
        view_name = projection.name_to_use()
        try:
            view = store.get_feature_view(projection.name)
            # A view keyed by one entity belongs to it; multi-entity views belong to none.
            entity: str | None = view.entities[0] if len(view.entities) == 1 else None
            view_tags: dict[str, str] = {}
        except FeatureViewNotFoundException:
            odfv = store.get_on_demand_feature_view(projection.name)
            entity = None
            view_tags = dict(odfv.tags)
            for source in odfv.source_request_sources.values():
                request_fields.extend(f.name for f in source.schema)
        for field in projection.features:
            dtype = str(field.dtype)
            where = f"{service_name}: {view_name}:{field.name}"
            if dtype not in NUMERIC_DTYPES:
                raise ValueError(f"{where}: dtype {dtype} is not numeric; the model reads numbers")
            raw = field.tags.get(DEFAULT_TAG, view_tags.get(f"{DEFAULT_TAG}:{field.name}"))
            specs.append(
                FeatureSpec(view_name, field.name, dtype, _parse_default(raw, where), entity)
            )
    return FeatureContract.build(service_name, specs, sorted(set(request_fields)))
