"""The feature contract between a model and the feature store, derived from a FeatureService.

A contract is the ordered list of features a model reads (the FeatureService's order), each
with its dtype, its declared default and the entity it belongs to. Its schema hash is stored
with every model version and checked by the gateway before a model is served.

Model input layout (the same for the trainer and the gateway, both call `assemble`):

    [ value columns ..., missing indicators ... ]

Value columns follow the contract order; a fixed-length vector feature (Array(Float32) with a
`length` tag) expands into `length` columns named `<ref>[0]` ... `<ref>[n-1]`. Then comes one
0/1 indicator per feature (`<ref>__missing`, same order): 1 when the value was absent, null,
NaN or expired and the declared default was used instead. The hash covers the layout, every
ref, dtype, default and vector length.
"""

from __future__ import annotations

import dataclasses
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
LENGTH_TAG = "length"
NUMERIC_DTYPES = frozenset({"Int32", "Int64", "Float32", "Float64", "Bool"})
VECTOR_DTYPES = frozenset({"Array(Float32)", "Array(Float64)"})
LAYOUT = "values+missing_indicators/v1"
INDICATOR_SUFFIX = "__missing"


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """One feature a model reads.

    Attributes:
        view: feature view (or on-demand view) name.
        name: feature name inside the view.
        dtype: Feast dtype name, e.g. "Float32" or "Array(Float32)".
        default: value used when the store has none (unknown entity, expired, null).
        entity: entity the view is keyed by ("user", "item", ...); None for on-demand views.
        length: number of model columns: 1 for a scalar, the declared length for a vector.
    """

    view: str
    name: str
    dtype: str
    default: float
    entity: str | None
    length: int = 1

    @property
    def ref(self) -> str:
        """Full feature name as Feast returns it with full_feature_names=True."""
        return f"{self.view}__{self.name}"

    @property
    def is_vector(self) -> bool:
        return self.dtype in VECTOR_DTYPES

    @property
    def columns(self) -> list[str]:
        """Its model value columns."""
        return [f"{self.ref}[{i}]" for i in range(self.length)] if self.is_vector else [self.ref]


@dataclass(frozen=True, slots=True)
class Assembled:
    """A model input matrix and what was missing in it.

    Attributes:
        matrix: [rows, width] float32, values then indicators (the model input).
        missing: [rows, value columns] bool, per value column.
        indicators: [rows, features] bool, per feature (the matrix's indicator columns).
    """

    matrix: np.ndarray
    missing: np.ndarray
    indicators: np.ndarray


@dataclass(frozen=True, slots=True)
class FeatureContract:
    """The ordered features of a FeatureService and the request fields its on-demand views need."""

    service: str
    features: tuple[FeatureSpec, ...]
    request_fields: tuple[str, ...]
    schema_hash: str
    # The assembly layout, derived once from `features` (assemble runs on every request).
    _layout: _Layout = dataclasses.field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_layout", _Layout.of(self.features))

    @classmethod
    def build(
        cls, service: str, features: Sequence[FeatureSpec], request_fields: Sequence[str] = ()
    ) -> FeatureContract:
        """Builds a contract and computes its schema hash."""
        payload = {
            "layout": LAYOUT,
            "features": [[f.ref, f.dtype, f.default, f.length] for f in features],
        }
        digest = hashlib.sha256(
            json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        ).hexdigest()
        return cls(service, tuple(features), tuple(request_fields), digest[:16])

    @property
    def refs(self) -> list[str]:
        """Feature refs in contract order (one per feature, vectors not expanded)."""
        return list(self._layout.refs)

    @property
    def value_columns(self) -> list[str]:
        return list(self._layout.value_index)

    @property
    def value_index(self) -> Mapping[str, int]:
        """Each value column's position (computed once per contract)."""
        return self._layout.value_index

    @property
    def indicator_columns(self) -> list[str]:
        return [f"{f.ref}{INDICATOR_SUFFIX}" for f in self.features]

    @property
    def columns(self) -> list[str]:
        """Every model input column, in order: values then missing indicators."""
        return self.value_columns + self.indicator_columns

    @property
    def value_width(self) -> int:
        return int(self._layout.defaults.size)

    @property
    def width(self) -> int:
        """The model input width (values + indicators)."""
        return self.value_width + len(self.features)

    def columns_of(self, entity: str) -> np.ndarray:
        """Indices of the value columns that belong to `entity`'s feature views (read-only)."""
        return self._layout.entity_columns.get(entity, _NO_COLUMNS)

    def defaults(self, rows: int) -> Assembled:
        """`rows` rows of nothing but declared defaults (every value missing)."""
        return self.assemble(pd.DataFrame({ref: [None] * rows for ref in self.refs}))

    def assemble(self, frame: pd.DataFrame | Mapping[str, Sequence[Any]]) -> Assembled:
        """Builds the float32 model input, filling missing values with defaults.

        Args:
            frame: feature values by full feature name (a DataFrame or column lists, as from
                Feast's `to_df()` / `to_dict()`); None / NaN mark a missing value; a vector
                feature holds a sequence of its declared length (or None).

        Returns:
            The matrix (values then indicators) and the missing masks.

        Raises:
            ContractMismatchError: a contract column is absent, or a vector has another length.
        """
        layout = self._layout
        columns = frame if isinstance(frame, pd.DataFrame) else dict(frame)
        absent = [ref for ref in layout.refs if ref not in columns]
        if absent:
            raise ContractMismatchError(
                f"feature service {self.service}: the store returned no column for {absent}"
            )
        rows = len(frame) if isinstance(frame, pd.DataFrame) else _rows(columns, layout.refs)
        values = np.empty((rows, layout.defaults.size), dtype=np.float64)
        if layout.scalar_refs:
            try:  # floats, ints, bools and None (-> NaN) of every scalar column in one C loop
                block = np.array([columns[ref] for ref in layout.scalar_refs], dtype=np.float64)
                if block.shape != (len(layout.scalar_refs), rows):
                    raise ValueError("not one number per row")
                values[:, layout.scalar_cols] = block.T
            except (TypeError, ValueError):  # strings, decimals, pd.NA: column by column
                for ref, col in zip(layout.scalar_refs, layout.scalar_cols, strict=True):
                    values[:, col] = _numeric(columns[ref])
        for spec, start in layout.vectors:
            values[:, start : start + spec.length] = self._vector(spec, columns[spec.ref])
        missing = np.isnan(values)
        filled = np.where(missing, layout.defaults, values)
        # Per feature: any of its value columns missing.
        indicators = (
            np.logical_or.reduceat(missing, layout.starts, axis=1)
            if layout.refs
            else np.zeros((rows, 0), dtype=bool)
        )
        matrix = np.empty((rows, filled.shape[1] + indicators.shape[1]), dtype=np.float32)
        matrix[:, : filled.shape[1]] = filled
        matrix[:, filled.shape[1] :] = indicators
        return Assembled(matrix, missing, indicators)

    def disassemble(self, matrix: np.ndarray) -> pd.DataFrame:
        """The feature values a model input matrix was assembled from: the inverse of `assemble`.

        A feature whose missing indicator is set comes back missing (NaN; None for a vector),
        so `assemble(disassemble(m)).matrix` equals `m`. Used to train on the exact inputs the
        gateway served (the served-feature log keeps the matrix, not the store's values).
        """
        layout = self._layout
        if matrix.ndim != 2 or matrix.shape[1] != self.width:
            raise ContractMismatchError(
                f"feature service {self.service}: a matrix of width "
                f"{matrix.shape[1] if matrix.ndim == 2 else '?'}, the contract's is {self.width}"
            )
        indicators = matrix[:, self.value_width :] > 0.5
        out: dict[str, Any] = {}
        for i, (spec, start) in enumerate(zip(self.features, layout.starts, strict=True)):
            block = matrix[:, start : start + spec.length].astype(np.float64)
            if spec.is_vector:
                out[spec.ref] = [
                    None if gone else row for row, gone in zip(block, indicators[:, i], strict=True)
                ]
            else:
                out[spec.ref] = np.where(indicators[:, i], np.nan, block[:, 0])
        return pd.DataFrame(out)

    def _vector(self, spec: FeatureSpec, column: Any) -> np.ndarray:
        """[rows, length] values of a vector feature: NaN rows where it is missing."""
        cells = column.tolist() if isinstance(column, pd.Series) else column
        rows = len(cells)
        try:  # every row present and of one length: one C loop
            block = np.array(cells, dtype=np.float64)
            if block.shape == (rows, spec.length):
                return block
        except (TypeError, ValueError):  # None rows, ragged rows
            pass
        out = np.full((rows, spec.length), np.nan)
        for row, value in enumerate(cells):
            if value is None:
                continue
            vec = np.asarray(value, dtype=np.float64)
            if vec.ndim == 0 and np.isnan(vec):  # NaN from a point-in-time join: missing
                continue
            if vec.shape != (spec.length,):
                raise ContractMismatchError(
                    f"feature service {self.service}: {spec.ref} has {vec.size} values in row "
                    f"{row}, the contract declares {spec.length}"
                )
            out[row] = vec
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly description, stored in each model version's manifest."""
        return {
            "feature_service": self.service,
            "schema_hash": self.schema_hash,
            "layout": LAYOUT,
            "width": self.width,
            "request_fields": list(self.request_fields),
            "features": [
                {
                    "ref": f.ref,
                    "dtype": f.dtype,
                    "default": f.default,
                    "entity": f.entity,
                    "length": f.length,
                }
                for f in self.features
            ],
        }


_NO_COLUMNS = np.empty(0, dtype=int)
_NO_COLUMNS.flags.writeable = False


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where each feature of a contract lands in the value columns."""

    refs: tuple[str, ...]
    defaults: np.ndarray  # [value columns] float64
    starts: np.ndarray  # each feature's first value column
    scalar_refs: tuple[str, ...]
    scalar_cols: np.ndarray  # their value columns
    vectors: tuple[tuple[FeatureSpec, int], ...]  # (vector feature, first value column)
    value_index: Mapping[str, int]  # value column name -> its position
    entity_columns: Mapping[str | None, np.ndarray]  # entity -> its value columns (read-only)

    @classmethod
    def of(cls, features: Sequence[FeatureSpec]) -> _Layout:
        starts = np.cumsum([0, *(f.length for f in features)])[:-1].astype(np.intp)
        scalars = [
            (f.ref, int(s)) for f, s in zip(features, starts, strict=True) if not f.is_vector
        ]
        by_entity: dict[str | None, list[int]] = {}
        for f, s in zip(features, starts, strict=True):
            by_entity.setdefault(f.entity, []).extend(range(int(s), int(s) + f.length))
        entity_columns = {e: np.array(cols, dtype=int) for e, cols in by_entity.items()}
        for cols in entity_columns.values():
            cols.flags.writeable = False  # shared by every request
        return cls(
            refs=tuple(f.ref for f in features),
            defaults=np.repeat([f.default for f in features], [f.length for f in features]).astype(
                np.float64
            ),
            starts=starts,
            scalar_refs=tuple(ref for ref, _ in scalars),
            scalar_cols=np.array([s for _, s in scalars], dtype=np.intp),
            vectors=tuple(
                (f, int(s)) for f, s in zip(features, starts, strict=True) if f.is_vector
            ),
            value_index={c: i for i, c in enumerate(c for f in features for c in f.columns)},
            entity_columns=entity_columns,
        )


def _parse_default(raw: str | None, where: str) -> float:
    if raw is None:
        raise ValueError(
            f"{where}: no default declared; declare one with features/defaults.py "
            "(feature(..., default=...), vector(...) or view_defaults(...))"
        )
    return float(raw)


def _parse_length(dtype: str, tags: Mapping[str, str], where: str) -> int:
    if dtype in NUMERIC_DTYPES:
        return 1
    if dtype in VECTOR_DTYPES:
        raw = tags.get(LENGTH_TAG)
        if raw is None or not raw.isdigit() or int(raw) < 1:
            raise ValueError(
                f"{where}: a vector feature needs a fixed length; declare it with "
                "features/defaults.py vector(name, length, default)"
            )
        return int(raw)
    raise ValueError(f"{where}: dtype {dtype} is not numeric; the model reads numbers")


def _rows(columns: Mapping[str, Any], refs: Sequence[str]) -> int:
    lengths = {len(columns[ref]) for ref in refs}
    if len(lengths) > 1:
        raise ContractMismatchError(f"columns of different lengths: {sorted(lengths)}")
    return lengths.pop() if lengths else 0


def _numeric(column: Any) -> np.ndarray:
    """A column as float64, NaN where missing: None, NaN, or a value that is not a number."""
    if isinstance(column, np.ndarray) and column.dtype.kind in "fiub":
        return column.astype(np.float64, copy=False)
    try:
        # Floats, ints, bools and None (-> NaN) in one C loop.
        return np.array(column, dtype=np.float64)
    except (TypeError, ValueError):  # strings, decimals, mixed objects: pandas' coercion
        series = column if isinstance(column, pd.Series) else pd.Series(column, dtype=object)
        numeric = pd.to_numeric(series, errors="coerce")
        return np.asarray(numeric.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


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
            length = _parse_length(dtype, field.tags, where)
            raw = field.tags.get(DEFAULT_TAG, view_tags.get(f"{DEFAULT_TAG}:{field.name}"))
            specs.append(
                FeatureSpec(
                    view_name, field.name, dtype, _parse_default(raw, where), entity, length
                )
            )
    return FeatureContract.build(service_name, specs, sorted(set(request_fields)))
