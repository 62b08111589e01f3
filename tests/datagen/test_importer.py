"""Importing a user's own event log: validation with row numbers, then the same tables."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest
from feast import FeatureStore
from typer.testing import CliRunner

from scoring.cli import app
from scoring.datagen.importer import ImportValidationError, read_event_log
from scoring.datagen.synthetic import SyntheticConfig, generate

from ..conftest import TEXT_CACHE, copy_feature_repo

END = datetime(2026, 3, 1, tzinfo=UTC)

GOOD = """user_id,item_id,event_type,timestamp,price,quantity
u1,sku1,impression,2026-02-01T10:00:00Z,,
u1,sku1,click,2026-02-01T10:00:30Z,,
u1,sku1,purchase,2026-02-01T10:05:00Z,19.99,2
u2,sku2,view,1769990400,,
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_valid_csv_log_is_read_with_utc_times(tmp_path: Path) -> None:
    log = read_event_log(write(tmp_path / "events.csv", GOOD))
    assert list(log.events["event_type"]) == ["impression", "click", "purchase", "view"]
    assert str(log.events["timestamp"].dt.tz) == "UTC"
    assert log.events["timestamp"].iloc[3] == pd.Timestamp(1769990400, unit="s", tz="UTC")
    assert log.events["price"].iloc[2] == 19.99 and log.events["quantity"].iloc[2] == 2


def test_bad_rows_are_all_reported_with_their_row_and_line(tmp_path: Path) -> None:
    bad = (
        "user_id,item_id,event_type,timestamp,price,quantity\n"
        "u1,sku1,impression,2026-02-01T10:00:00Z,,\n"
        ",sku1,click,2026-02-01T10:00:30Z,,\n"
        "u1,,view,2026-02-01T10:00:30Z,,\n"
        "u1,sku1,clik,2026-02-01T10:00:30Z,,\n"
        "u1,sku1,view,yesterday,,\n"
        "u1,sku1,purchase,2026-02-01T10:05:00Z,-3,1\n"
        "u1,sku1,purchase,2026-02-01T10:05:00Z,3,1.5\n"
    )
    with pytest.raises(ImportValidationError) as info:
        read_event_log(write(tmp_path / "events.csv", bad))
    problems = info.value.problems
    assert problems == [
        "events.csv row 2 (line 3): user_id '' is empty",
        "events.csv row 3 (line 4): item_id '' is empty (and no activity_id or bundle_id is given)",
        "events.csv row 4 (line 5): event_type 'clik' is not one of impression, click, view, "
        "add_to_cart, purchase",
        "events.csv row 5 (line 6): timestamp 'yesterday' is not a date-time "
        "(ISO-8601 or Unix seconds)",
        "events.csv row 6 (line 7): price '-3' must be a number >= 0",
        "events.csv row 7 (line 8): quantity '1.5' must be a whole number",
    ]
    assert "6 problem(s)" in str(info.value)


def test_missing_columns_and_bad_attribute_tables_are_named(tmp_path: Path) -> None:
    with pytest.raises(ImportValidationError, match=r"missing column\(s\) \['event_type'\]"):
        read_event_log(write(tmp_path / "e.csv", "user_id,item_id,timestamp\nu1,i1,2026-01-01\n"))
    items = write(tmp_path / "items.csv", "item_id,price,rating\nsku1,5,4.5\nsku1,x,9\n")
    acts = write(
        tmp_path / "acts.csv",
        "activity_id,activity_type,start_at,end_at\nc1,raffle,2026-02-02,2026-02-01\n",
    )
    events = write(tmp_path / "events.csv", GOOD + "u3,,impression,2026-02-01T11:00:00Z,,\n")
    with pytest.raises(ImportValidationError) as info:
        read_event_log(events, items=items, activities=acts)
    text = "\n".join(info.value.problems)
    assert "items.csv row 2 (line 3): item_id 'sku1' appears twice" in text
    assert "items.csv row 2 (line 3): price 'x' must be a number >= 0" in text
    assert "items.csv row 2 (line 3): rating '9' must be a number >= 0 <= 5" in text
    assert "acts.csv row 1 (line 2): activity_type 'raffle' is not one of" in text
    assert "acts.csv row 1 (line 2): end_at" in text and "must be after start_at" in text
    assert "events.csv row 5 (line 6): item_id '' is empty" in text


def test_cli_imports_a_parquet_log_into_the_feature_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new user's path: export events + tables, `scoring data import`, get every table."""
    log = generate(SyntheticConfig(60, 40, 6, 2000, 500, days=10, organic_per_user=8, end=END))
    events = tmp_path / "events.parquet"
    log.events.drop(columns=["p_click", "p_purchase"]).to_parquet(events)
    log.items.to_csv(tmp_path / "items.csv", index=False)
    log.users.to_csv(tmp_path / "users.csv", index=False)
    log.activities.to_csv(tmp_path / "activities.csv", index=False)
    log.bundles.to_csv(tmp_path / "bundles.csv", index=False)
    repo = copy_feature_repo(tmp_path / "features")  # definitions: the import registers them
    (repo / "data").mkdir(parents=True)
    TEXT_CACHE.parent.mkdir(parents=True, exist_ok=True)
    if TEXT_CACHE.exists():  # reuse the test runs' text encodings
        (repo / "data" / "text_cache.parquet").write_bytes(TEXT_CACHE.read_bytes())
    monkeypatch.setenv("SCORING_FEAST__REPO_PATH", str(repo))
    args = ["data", "import", str(events)]
    for name in ("items", "users", "activities", "bundles"):
        args += [f"--{name}", str(tmp_path / f"{name}.csv")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for table in ("user_behavior", "item_stats", "item_embedding", "impressions_item"):
        assert (repo / "data" / f"{table}.parquet").exists()
    # Baskets and bundle events kept; the items' oracle is not part of the import format.
    kept = pd.read_parquet(repo / "data" / "events.parquet")
    assert (kept["order_id"] != "").sum() == (log.events["order_id"] != "").sum()
    assert set(kept["bundle_id"]) == set(log.events["bundle_id"])
    assert not (repo / "data" / "item_oracle.parquet").exists()
    shown = pd.read_parquet(repo / "data" / "impressions_item.parquet")
    assert shown["clicked"].sum() > 0 and "p_click" not in shown.columns
    assert "registered the feature definitions" in result.output
    store = FeatureStore(repo_path=str(repo))  # ready to train on: the contract is registered
    assert store.get_feature_service("item_ranker_v1").name == "item_ranker_v1"


def test_cli_refuses_bad_rows_with_exit_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCORING_FEAST__REPO_PATH", str(tmp_path / "features"))
    events = write(tmp_path / "events.csv", GOOD + "u9,sku9,clik,2026-02-01,,\n")
    result = CliRunner().invoke(app, ["data", "import", str(events)])
    assert result.exit_code == 2
    assert "events.csv row 5 (line 6): event_type 'clik'" in result.output
    assert not (tmp_path / "features" / "data").exists()
