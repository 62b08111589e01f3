"""Reads a user's own event log (CSV or Parquet) and attribute tables, validating every row.

The format is in scoring.datagen.events (and the README, "Data in"). Bad rows are
reported all at once, each with its file and row number (`events.csv row 7 (line 8):
event_type 'clik' is not one of impression, click, ...`), and nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scoring.datagen.events import (
    ACTIVITY_COLUMNS,
    ACTIVITY_TYPES,
    BUNDLE_COLUMNS,
    BUNDLE_ITEM_SEPARATOR,
    EVENT_COLUMNS,
    EVENT_TYPES,
    ITEM_COLUMNS,
    USER_COLUMNS,
    EventLog,
)

MAX_REPORTED = 20


class ImportValidationError(ValueError):
    """The input has bad rows or columns; `problems` lists each one with its row number."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = self.problems[:MAX_REPORTED]
        more = len(self.problems) - len(shown)
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{len(self.problems)} problem(s) in the input:\n  " + "\n  ".join(shown) + tail
        )


@dataclass
class _Table:
    """One input file read as text columns, and the problems found in it."""

    name: str
    frame: pd.DataFrame
    is_csv: bool
    problems: list[str]

    def where(self, row: int) -> str:
        # Rows count data rows from 1; a CSV's line adds the header.
        line = f" (line {row + 2})" if self.is_csv else ""
        return f"{self.name} row {row + 1}{line}"

    def report(self, bad: np.ndarray, message: str, column: str | None = None) -> None:
        for row in np.flatnonzero(bad):
            shown = f" {self.frame[column].iloc[row]!r}" if column else ""
            self.problems.append(f"{self.where(int(row))}: {column or ''}{shown} {message}".strip())

    def text(self, column: str) -> pd.Series:
        if column not in self.frame:
            return pd.Series("", index=self.frame.index, dtype=object)
        col = self.frame[column]
        return col.where(col.notna(), "").astype(str).str.strip()

    def number(self, column: str, low: float, high: float = np.inf) -> pd.Series:
        """Numeric column (NaN where empty); out-of-range or unparseable values are reported."""
        raw = self.text(column)
        value = pd.to_numeric(raw.where(raw != ""), errors="coerce")
        bad = (raw != "") & (value.isna() | (value < low) | (value > high))
        bound = f"<= {high:g}" if np.isfinite(high) else ""
        self.report(bad.to_numpy(), f"must be a number >= {low:g} {bound}".strip(), column)
        return value.where(~bad)

    def time(self, column: str, required: bool) -> pd.Series:
        """UTC timestamps from ISO-8601 text or Unix seconds; bad ones are reported."""
        raw = self.text(column)
        numeric = pd.to_numeric(raw.where(raw != ""), errors="coerce")
        parsed = pd.to_datetime(raw.where(numeric.isna() & (raw != "")), utc=True, errors="coerce")
        # Unix seconds: convert only the plausible values (|s| < 1e11, before the year 5138).
        # pandas' unit conversion multiplies under np.errstate(over="raise"), so an all-NaN or
        # out-of-range column can raise FloatingPointError instead of coercing.
        plausible = numeric.notna() & (numeric.abs() < 1e11)
        seconds = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
        if plausible.any():
            seconds[plausible] = pd.to_datetime(numeric[plausible], unit="s", utc=True)
        out = parsed.where(numeric.isna(), seconds)
        bad = out.isna() & ((raw != "") | required)
        message = (
            "is not a date-time (ISO-8601 or Unix seconds)" if required else "is not a date-time"
        )
        self.report(bad.to_numpy(), message, column)
        return out.dt.floor("s")

    def require_columns(self, columns: Sequence[str]) -> bool:
        missing = [c for c in columns if c not in self.frame.columns]
        if missing:
            self.problems.append(
                f"{self.name}: missing column(s) {missing}; required: {', '.join(columns)}"
            )
        return not missing

    def unique_ids(self, column: str) -> pd.Series:
        ids = self.text(column)
        self.report((ids == "").to_numpy(), "is empty", column)
        dup = ids.duplicated(keep="first") & (ids != "")
        self.report(dup.to_numpy(), "appears twice", column)
        return ids


def _read(path: Path, problems: list[str]) -> _Table:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    elif suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    else:
        raise ImportValidationError([f"{path.name}: unsupported file type; use .csv or .parquet"])
    return _Table(path.name, frame.reset_index(drop=True), suffix == ".csv", problems)


def _items(it: _Table, frame: pd.DataFrame) -> pd.DataFrame:
    for col in ("category", "brand", "title", "description"):
        if col in it.frame:
            frame[col] = it.text(col).replace("", None)
    for col, low, high in (("price", 0.0, np.inf), ("rating", 0.0, 5.0), ("in_stock", 0, 1)):
        if col in it.frame:
            frame[col] = it.number(col, low, high)
    if "created_at" in it.frame:
        frame["created_at"] = it.time("created_at", required=False)
    return frame


def _users(us: _Table, frame: pd.DataFrame) -> pd.DataFrame:
    for col in ("segment", "region", "membership_level", "age_bucket"):
        if col in us.frame:
            raw = us.text(col)
            numeric = pd.to_numeric(raw.where(raw != ""), errors="coerce")
            all_numbers = numeric.notna().sum() == (raw != "").sum()
            frame[col] = numeric if all_numbers else raw.replace("", None)
    if "signup_at" in us.frame:
        frame["signup_at"] = us.time("signup_at", required=False)
    return frame


def _activities(ac: _Table, frame: pd.DataFrame) -> pd.DataFrame:
    act_type = ac.text("activity_type").str.lower()
    ac.report(
        ~act_type.isin(ACTIVITY_TYPES).to_numpy(),
        f"is not one of {', '.join(ACTIVITY_TYPES)}",
        "activity_type",
    )
    frame["activity_type"] = act_type
    frame["start_at"] = ac.time("start_at", required=True)
    frame["end_at"] = ac.time("end_at", required=True)
    ac.report(
        (frame["end_at"] <= frame["start_at"]).to_numpy(),
        "must be after start_at",
        "end_at",
    )
    frame["discount_pct"] = ac.number("discount_pct", 0.0, 1.0).fillna(0.0)
    frame["target_categories"] = ac.text("target_categories")
    return frame


def _bundles(bu: _Table, frame: pd.DataFrame) -> pd.DataFrame:
    """Bundle rows; their items are checked against the items table in `_check_bundles`."""
    listed = bu.frame["items"].map(lambda v: isinstance(v, list | tuple | np.ndarray))
    if listed.any():  # a Parquet list column: the same ids, joined
        bu.frame["items"] = bu.frame["items"].where(
            ~listed, bu.frame["items"].map(lambda v: BUNDLE_ITEM_SEPARATOR.join(map(str, v)))
        )
    parts = bu.text("items").str.split(BUNDLE_ITEM_SEPARATOR)
    distinct = parts.map(lambda ids: list(dict.fromkeys(i.strip() for i in ids if i.strip())))
    bu.report(
        (distinct.str.len() < 2).to_numpy(),
        f'must name at least 2 distinct item ids ("i1{BUNDLE_ITEM_SEPARATOR}i2")',
        "items",
    )
    frame["items"] = distinct.str.join(BUNDLE_ITEM_SEPARATOR)
    frame["bundle_price"] = bu.number("bundle_price", 0.0).astype("float64")
    frame["name"] = bu.text("name").replace("", None)
    frame["start_at"] = bu.time("start_at", required=False)
    frame["end_at"] = bu.time("end_at", required=False)
    bu.report(
        (frame["end_at"] <= frame["start_at"]).to_numpy(),
        "must be after start_at",
        "end_at",
    )
    return frame


# Per attribute table: its required columns (the id first) and what builds its other columns.
_Fill = Callable[[_Table, pd.DataFrame], pd.DataFrame]
_ATTRIBUTE_TABLES: dict[str, tuple[Sequence[str], _Fill]] = {
    "items": (ITEM_COLUMNS, _items),
    "users": (USER_COLUMNS, _users),
    "activities": (ACTIVITY_COLUMNS, _activities),
    "bundles": (BUNDLE_COLUMNS, _bundles),
}


def _check_bundles(bu: _Table, bundles: pd.DataFrame, items: pd.DataFrame | None) -> None:
    """Every bundled item is in the items table (when there is one); a missing bundle_price is
    the sum of its items' prices (NaN when one of them has none)."""
    parts = bundles["items"].str.split(BUNDLE_ITEM_SEPARATOR)
    if items is None:
        return
    known = set(items["item_id"])
    unknown = parts.map(lambda ids: [i for i in ids if i and i not in known])
    for row in np.flatnonzero(unknown.str.len().to_numpy() > 0):
        bu.problems.append(
            f"{bu.where(int(row))}: items {bundles['items'].iloc[row]!r} names item(s) "
            f"{', '.join(unknown.iloc[row])} not in the items table"
        )
    if "price" in items and len(bundles):
        price = items.drop_duplicates("item_id").set_index("item_id")["price"]
        exploded = parts.explode()
        each = pd.Series(price.reindex(exploded.to_numpy()).to_numpy(), index=exploded.index)
        total = each.groupby(level=0).sum().where(each.notna().groupby(level=0).all())
        bundles["bundle_price"] = bundles["bundle_price"].fillna(total)


def _check_orders(ev: _Table, user_id: pd.Series, order_id: pd.Series) -> None:
    """One order belongs to one user: rows whose user differs from the order's first row's."""
    has = order_id != ""
    if not has.any():
        return
    first = pd.DataFrame({"order": order_id[has], "user": user_id[has]}).groupby("order").head(1)
    first_user = pd.Series(first["user"].to_numpy(), index=first["order"].to_numpy())
    first_row = pd.Series(first.index.to_numpy(), index=first["order"].to_numpy())
    owner = order_id.map(first_user)
    for row in np.flatnonzero((has & (user_id != owner)).to_numpy()):
        order = order_id.iloc[row]
        ev.problems.append(
            f"{ev.where(int(row))}: order_id {order!r} belongs to user_id "
            f"{owner.iloc[row]!r} (row {int(first_row[order]) + 1}), not {user_id.iloc[row]!r}"
        )


def read_event_log(
    events: Path,
    items: Path | None = None,
    users: Path | None = None,
    activities: Path | None = None,
    bundles: Path | None = None,
) -> EventLog:
    """Reads and validates an event log and its optional attribute tables.

    Raises:
        ImportValidationError: listing every bad row (file, row number, column, value, why).
    """
    problems: list[str] = []
    ev = _read(events, problems)
    if not ev.require_columns(EVENT_COLUMNS):
        raise ImportValidationError(problems)
    user_id = ev.text("user_id")
    item_id = ev.text("item_id")
    activity_id = ev.text("activity_id")
    bundle_id = ev.text("bundle_id")
    order_id = ev.text("order_id")
    kind = ev.text("event_type").str.lower()
    ev.report((user_id == "").to_numpy(), "is empty", "user_id")
    ev.report(
        ((item_id == "") & (activity_id == "") & (bundle_id == "")).to_numpy(),
        "is empty (and no activity_id or bundle_id is given)",
        "item_id",
    )
    ev.report(
        ((bundle_id != "") & ((item_id != "") | (activity_id != ""))).to_numpy(),
        "is an event on the bundle itself: its item_id and activity_id must be empty",
        "bundle_id",
    )
    _check_orders(ev, user_id, order_id)
    ev.report(
        ~kind.isin(EVENT_TYPES).to_numpy(), f"is not one of {', '.join(EVENT_TYPES)}", "event_type"
    )
    timestamp = ev.time("timestamp", required=True)
    price = ev.number("price", 0.0)
    quantity = ev.number("quantity", 1.0)
    ev.report(
        (quantity.notna() & (quantity != quantity.round())).to_numpy(),
        "must be a whole number",
        "quantity",
    )

    inputs = {"items": items, "users": users, "activities": activities, "bundles": bundles}
    tables: dict[str, pd.DataFrame] = {}
    read: dict[str, _Table] = {}
    for name, path in inputs.items():
        if path is None:
            continue
        required, fill = _ATTRIBUTE_TABLES[name]
        table = _read(path, problems)
        if table.require_columns(required):
            id_column = required[0]
            tables[name] = fill(table, pd.DataFrame({id_column: table.unique_ids(id_column)}))
            read[name] = table
    if "bundles" in tables:
        _check_bundles(read["bundles"], tables["bundles"], tables.get("items"))
    if activities is None:
        ev.report(
            ((activity_id != "") & (item_id == "")).to_numpy(),
            "is a campaign event, which needs an activities table (--activities)",
            "activity_id",
        )
    elif "activities" in tables:
        known = set(tables["activities"]["activity_id"])
        ev.report(
            ((activity_id != "") & ~activity_id.isin(known)).to_numpy(),
            f"is not in {activities.name}",
            "activity_id",
        )
    if bundles is None:
        ev.report(
            (bundle_id != "").to_numpy(),
            "is a bundle event, which needs a bundles table (--bundles)",
            "bundle_id",
        )
    elif "bundles" in tables:
        known = set(tables["bundles"]["bundle_id"])
        ev.report(
            ((bundle_id != "") & ~bundle_id.isin(known)).to_numpy(),
            f"is not in {bundles.name}",
            "bundle_id",
        )
    if problems:
        raise ImportValidationError(problems)
    frame = pd.DataFrame(
        {
            "user_id": user_id,
            "item_id": item_id,
            "event_type": kind,
            "timestamp": timestamp,
            "price": price.astype("float64"),
            "quantity": quantity.astype("float64"),
            "activity_id": activity_id,
            "bundle_id": bundle_id,
            # A basket/order id, when the log has one, is kept for evaluation (docs/data.md).
            **({"order_id": order_id} if "order_id" in ev.frame else {}),
        }
    ).sort_values("timestamp", kind="stable", ignore_index=True)
    if frame.empty:
        raise ImportValidationError([f"{ev.name}: no events"])
    return EventLog(frame, **tables)
