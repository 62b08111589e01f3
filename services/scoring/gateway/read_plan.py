"""What one online read needs from the Feast registry, and what turns stored values into the
contract's features: the part every feature source shares (see feature_source.py).

A `ReadPlan` lists, for one FeatureService, the stored views to read (with their TTL) and the
on-demand views to compute. `ReadPlan.finish` enforces each view's TTL at read time (not every
online store does, e.g. Redis and SQLite return whatever was last materialized): a stored value
older than its view's ttl, measured from the request time, counts as missing, so the contract
fills its default and sets its missing indicator, as Feast's point-in-time join does in
training. Request-time (on-demand) features are computed after that, from the TTL-checked
inputs. Feature age (seconds since the newest value's event time, per view, the maximum over
the rows read) is reported with every read: `OnlineFeatures.age_s`.
`FeatureCatalog` keeps the contracts and plans of one store, re-read when its registry changes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from feast.errors import FeatureViewNotFoundException

from scoring.core import feast_compat
from scoring.core.contract import FeatureContract, contract_from_store
from scoring.core.feature_repo import open_store

# An on-demand view tagged `inputs: arrays` (features/defaults.py `array_inputs`) has a UDF that
# also takes float64 numpy columns by short name and returns its outputs as columns.
INPUTS_TAG, ARRAY_INPUTS = "inputs", "arrays"
# A contract is re-read from the Feast registry when the registry says it changed (its last
# update time, or the registry file's mtime), and at least this often in any case: the update
# time has a resolution of one second, and a store may not expose it.
CONTRACT_MAX_AGE_S = 60.0
FS_YAML_ENV = "SCORING_FEAST__FS_YAML"
logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OnlineFeatures:
    """One online read.

    Attributes:
        columns: per contract ref, one value per candidate (None / NaN when missing), in the
            contract's order: what `FeatureContract.assemble` takes.
        age_s: per stored view, seconds since the newest event time among its rows (the
            maximum over rows; views with no value in any row are absent).
        expired: per stored view, how many rows held a value older than the view's ttl.
    """

    columns: dict[str, Any]
    age_s: dict[str, float]
    expired: dict[str, int]


NUMERIC_TYPES = frozenset({"Float32", "Float64", "Int32", "Int64"})


def _numeric(dtype: Any) -> bool:
    return str(dtype) in NUMERIC_TYPES


@dataclass(frozen=True, slots=True)
class OnDemand:
    """An on-demand feature view and what its UDF reads, resolved once per read plan.

    A pandas-mode view gets the input Feast's `transform_arrow` builds (each source feature
    under its full and its short name, and the request fields) and its UDF runs on it, without
    the Arrow round trips. Numeric inputs come as one float64 block (NaN when missing, as Arrow
    gives integer columns with nulls): one array for the frame instead of a column-by-column
    type inference, about 1 ms per request. A view tagged `inputs: arrays` whose inputs are all
    numeric gets no DataFrame at all: its UDF takes the float64 columns by short name and
    returns its outputs as columns (about 0.5 ms less a request at 10 candidates). Other modes,
    or short names that two sources share, go through Feast's own `transform_arrow`.
    """

    view: Any
    inputs: tuple[tuple[str, str], ...]  # (full, short) name of each source feature
    numeric: tuple[bool, ...]  # per input: a numeric dtype (sent as float64)
    request_fields: tuple[tuple[str, bool], ...]  # (name, numeric)
    prefix: str  # of its outputs' full names
    direct: bool  # call the UDF on a DataFrame, not through Arrow
    arrays: bool  # call it on numpy columns, not on a DataFrame (implies direct)
    outputs: tuple[str, ...]  # the output features' short names, in schema order
    shorts: tuple[str, ...]  # the inputs' short names, in input order

    @classmethod
    def of(cls, odfv: Any) -> OnDemand:
        fields = [
            (f"{projection.name}__{feature.name}", feature.name, _numeric(feature.dtype))
            for projection in odfv.source_feature_view_projections.values()
            for feature in projection.features
        ]
        full, short = {f for f, _, _ in fields}, {s for _, s, _ in fields}
        direct = odfv.mode == "pandas" and len(short) == len(fields) and not full & short
        request_fields = tuple(
            (field.name, _numeric(field.dtype))
            for source in odfv.source_request_sources.values()
            for field in source.schema
        )
        return cls(
            view=odfv,
            inputs=tuple((f, s) for f, s, _ in fields),
            numeric=tuple(n for _, _, n in fields),
            request_fields=request_fields,
            prefix=f"{odfv.projection.name_to_use()}__",
            direct=direct,
            arrays=direct
            and odfv.tags.get(INPUTS_TAG) == ARRAY_INPUTS
            and all(n for _, _, n in fields)
            and all(n for _, n in request_fields),
            outputs=tuple(f.name for f in odfv.features),
            shorts=tuple(s for _, s, _ in fields),
        )

    def _arrays(
        self, columns: dict[str, Any], request_values: dict[str, Any], rows: int
    ) -> dict[str, np.ndarray]:
        """The UDF's input as float64 columns by short name (NaN when missing)."""
        try:  # every input in one C loop (None -> NaN); each column a view of the block
            block = np.array([columns[full] for full, _ in self.inputs], dtype=np.float64)
        except (TypeError, ValueError):  # e.g. a value that is not a number
            block = None
        if block is not None and block.shape == (len(self.inputs), rows):
            arrays = dict(zip(self.shorts, block, strict=True))
        else:
            arrays = {short: np.asarray(columns[full], np.float64) for full, short in self.inputs}
        for name, _ in self.request_fields:
            value = request_values.get(name)
            arrays[name] = np.full(rows, np.nan if value is None else value, np.float64)
        return arrays

    def _frame(
        self, columns: dict[str, Any], request_values: dict[str, Any], rows: int
    ) -> pd.DataFrame:
        """The UDF's input: numeric columns as one float64 block, the rest as given."""
        names: list[str] = []  # full names of the numeric inputs
        shorts: list[str] = []  # their short names, then the numeric request fields
        arrays: list[np.ndarray] = []
        others: dict[str, Any] = {}
        for (full, short), numeric in zip(self.inputs, self.numeric, strict=True):
            if numeric:
                names.append(full)
                shorts.append(short)
                arrays.append(np.asarray(columns[full], dtype=np.float64))  # None -> NaN
            else:
                others[full] = others[short] = columns[full]
        for name, numeric in self.request_fields:
            value = request_values.get(name)
            if numeric:
                shorts.append(name)
                arrays.append(np.full(rows, np.nan if value is None else value, np.float64))
            else:
                others[name] = [value] * rows
        block = np.column_stack(arrays) if arrays else np.empty((rows, 0))
        frame = pd.DataFrame(
            np.concatenate([block[:, : len(names)], block], axis=1),
            columns=[*names, *shorts],
            copy=False,
        )
        for name, values in others.items():
            frame[name] = values
        return frame

    def compute(
        self, columns: dict[str, Any], request_values: dict[str, Any], rows: int
    ) -> dict[str, Any]:
        """The view's outputs by full name, computed from the stored columns."""
        if self.arrays:
            result = self.view.feature_transformation.udf(
                self._arrays(columns, request_values, rows)
            )
            return {self.prefix + name: result[name] for name in self.outputs}
        if self.direct:
            out = self.view.feature_transformation.transform(
                self._frame(columns, request_values, rows)
            )
            # One conversion (the UDF's outputs are one float32 block), then column views.
            values = out.to_numpy()
            return {self.prefix + name: values[:, j] for j, name in enumerate(out.columns)}
        request = {name: [request_values.get(name)] * rows for name, _ in self.request_fields}
        table = pa.table(
            {
                **{k: pa.array(v) for k, v in columns.items()},
                **{k: pa.array(v, type=pa.int64()) for k, v in request.items()},
            }
        )
        result = self.view.transform_arrow(table, full_feature_names=True).to_pandas()
        return {
            name: result[name].to_numpy() for name in result.columns if name.startswith(self.prefix)
        }


@dataclass(frozen=True, slots=True)
class ReadPlan:
    """What one FeatureService needs from the online store, resolved from the registry once.

    Attributes:
        refs: `view:feature` of every stored feature to read, on-demand inputs included.
        views: per stored view, its ttl in seconds (0: none) and its features, in read order.
        on_demand: the on-demand views to compute after the stored ones are read.
        columns: per stored view, its features' full names (`<view>__<feature>`).
    """

    refs: tuple[str, ...]
    views: dict[str, tuple[float, tuple[str, ...]]]
    on_demand: tuple[OnDemand, ...]
    columns: dict[str, tuple[str, ...]]

    @classmethod
    def of(cls, store: Any, service_name: str) -> ReadPlan:
        """The plan of the FeatureService `service_name` of a `feast.FeatureStore`."""
        service = store.get_feature_service(service_name)
        views: dict[str, tuple[float, list[str]]] = {}
        odfvs: list[Any] = []

        def need(view_name: str, features: list[str]) -> None:
            view = store.get_feature_view(view_name)
            ttl = view.ttl.total_seconds() if view.ttl else 0.0
            known = views.setdefault(view_name, (ttl, []))[1]
            known.extend(f for f in features if f not in known)

        for projection in service.feature_view_projections:
            try:
                need(projection.name, [f.name for f in projection.features])
            except FeatureViewNotFoundException:
                odfv = store.get_on_demand_feature_view(projection.name)
                odfvs.append(odfv)
                for source in odfv.source_feature_view_projections.values():
                    need(source.name, [f.name for f in source.features])
        return cls(
            refs=tuple(f"{v}:{f}" for v, (_, feats) in views.items() for f in feats),
            views={v: (ttl, tuple(feats)) for v, (ttl, feats) in views.items()},
            on_demand=tuple(OnDemand.of(v) for v in odfvs),
            columns={v: tuple(f"{v}__{f}" for f in feats) for v, (_, feats) in views.items()},
        )

    @property
    def stored(self) -> tuple[str, ...]:
        """The full names (`<view>__<feature>`) of every stored feature read, in read order."""
        return tuple(name for names in self.columns.values() for name in names)

    def finish(
        self,
        contract: FeatureContract,
        raw: dict[str, list[Any]],
        request_values: dict[str, Any],
        n: int,
        now: float | None = None,
    ) -> OnlineFeatures:
        """TTL, age and on-demand features on top of the stored values of one read.

        Args:
            contract: the contract read; its refs give the columns' order.
            raw: stored values by `<view>__<feature>` and event times (Unix s) by
                `<view>__<feature>__ts`, one entry per candidate: what Feast's
                `to_dict(include_event_timestamps=True)` gives.
            request_values: request-time inputs of the on-demand views (`request_ts`).
            n: the number of candidates.
            now: the request time in Unix seconds (TTL and age are measured from it);
                `request_values["request_ts"]`, else the clock, by default.
        """
        if now is None:
            now = float(request_values.get("request_ts") or time.time())
        columns, age_s, expired_rows = self._stored(raw, n, now)
        for odfv in self.on_demand:
            columns.update(odfv.compute(columns, request_values, n))
        ordered = {ref: columns[ref] for ref in contract.refs if ref in columns}
        return OnlineFeatures(ordered, age_s, expired_rows)

    def rows(self, raw: dict[str, list[Any]], n: int, now: float) -> OnlineFeatures:
        """The stored features alone, TTL applied, of any dtype (strings kept): what a read of
        entity rows without a model contract gives (the cart's items, `FeatureSource.read_rows`).

        Args:
            raw: as for `finish`, one entry per row.
            n: the number of rows.
            now: the request time in Unix seconds (TTL and age are measured from it).
        """
        columns, age_s, expired_rows = self._stored(raw, n, now)
        return OnlineFeatures(columns, age_s, expired_rows)

    def _stored(
        self, raw: dict[str, list[Any]], n: int, now: float
    ) -> tuple[dict[str, Any], dict[str, float], dict[str, int]]:
        """The stored columns with expired values as None, each view's age and expired rows."""
        columns: dict[str, Any] = {}
        age_s: dict[str, float] = {}
        expired_rows: dict[str, int] = {}
        for view, (ttl, _) in self.views.items():
            refs = self.columns[view]
            stamps = np.array(raw[refs[0] + feast_compat.TIMESTAMP_SUFFIX], dtype=np.float64)
            # A row is present when it has a stamp and any value (stop at the first feature
            # that shows every row: usually the first).
            present = np.zeros(n, dtype=bool)
            for ref in refs:
                present |= np.fromiter((v is not None for v in raw[ref]), bool, n)
                if present.all():
                    break
            present &= stamps > 0
            age = now - stamps
            expired = present & (age > ttl) if ttl > 0 else np.zeros(n, dtype=bool)
            if present.any():
                age_s[view] = float(age[present].max())
            gone = int(expired.sum())
            expired_rows[view] = gone
            for ref in refs:
                values = raw[ref]
                columns[ref] = (
                    [None if old else v for v, old in zip(values, expired, strict=True)]
                    if gone
                    else values
                )
        return columns, age_s, expired_rows


class FeatureCatalog:
    """The live contracts and read plans of one Feast store, re-read when its registry changes.

    Every feature source holds one; a source that keeps something derived from the plans (the
    Redis layout, its row cache) passes `on_change`, called whenever the plans are dropped.
    """

    def __init__(
        self,
        repo_path: Path,
        fs_yaml: Path | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        """Opens the store of `repo_path` with the profile `fs_yaml`.

        Args:
            repo_path: the Feast repo (settings.feast.repo_path).
            fs_yaml: the store profile (settings.feast.fs_yaml); when None, the gateway
                process's SCORING_FEAST__FS_YAML applies, else the repo's feature_store.yaml.
            on_change: called after the read plans were dropped (the registry changed).
        """
        if fs_yaml is None and os.environ.get(FS_YAML_ENV):
            fs_yaml = Path(os.environ[FS_YAML_ENV])
        self.store = open_store(repo_path, fs_yaml)
        self._on_change = on_change
        self._plans: dict[tuple[str, str], ReadPlan] = {}
        self._contracts: dict[str, tuple[object, float, FeatureContract]] = {}
        self._registry_error = ""

    def registry_stamp(self) -> object | None:
        """Changes whenever the Feast registry changes (None: this registry cannot say).

        One small query on the SQL registry (its last-updated time), a stat of the file
        registry: what a health round can afford each second, unlike re-reading every view
        (17 ms of CPU per FeatureService here, most of it unpickling on-demand UDFs).
        """
        return feast_compat.registry_stamp(self.store)

    def contract(self, service: str) -> FeatureContract:
        """The live contract of `service`, re-read only when the registry changed (see
        `registry_stamp`) or it is older than CONTRACT_MAX_AGE_S.

        A registry that cannot be reached keeps the contract read last (logged); a registry
        that answers without the service raises, as on the first read.
        """
        cached = self._contracts.get(service)
        try:
            stamp = self.registry_stamp()  # before the read: a change in between is seen next
        except Exception as exc:
            if cached is None:
                raise
            # The registry is not on the request path: while it cannot be reached, serve on
            # with the contract read last (the models were checked against it).
            if str(exc) != self._registry_error:  # once per outage, not every round
                logger.warning("feature_registry_unreachable error=%s", exc)
                self._registry_error = str(exc)
            return cached[2]
        self._registry_error = ""
        now = time.monotonic()
        if (
            cached is not None
            and stamp is not None
            and cached[0] == stamp
            and now - cached[1] < CONTRACT_MAX_AGE_S
        ):
            return cached[2]
        contract = contract_from_store(self.store, service)
        if cached is not None and cached[0] != stamp:
            self.forget()  # views or on-demand UDFs may have changed under the same schema
        self._contracts[service] = (stamp, now, contract)
        return contract

    def plan(self, contract: FeatureContract) -> ReadPlan:
        """The read plan of `contract`'s FeatureService (kept until the registry changes)."""
        key = (contract.service, contract.schema_hash)
        plan = self._plans.get(key)
        if plan is None:
            self._plans[key] = plan = ReadPlan.of(self.store, contract.service)
        return plan

    def service_plan(self, service: str) -> ReadPlan:
        """The read plan of a FeatureService that is no model's contract (its features may be
        strings: the cart's co-purchase neighbour ids), kept until the registry changes.

        Raises:
            feast.errors.FeatureServiceNotFoundException: no such service is registered.
        """
        key = (service, "")
        plan = self._plans.get(key)
        if plan is None:
            self._plans[key] = plan = ReadPlan.of(self.store, service)
        return plan

    def forget(self) -> None:
        """Drops the read plans (the registry changed), then tells the source (`on_change`)."""
        self._plans.clear()
        if self._on_change is not None:
            self._on_change()
