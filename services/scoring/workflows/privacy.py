"""Forgetting a user on request, and expiring the gateway's logs (`scoring privacy ...`).

`forget_user` deletes one user's rows wherever the platform keeps them: the served-feature log
(matched by the user's keyed hash, or the raw id where the log keeps it) and the served-event
log (the user's requests; the shadow scores and Feedback of those requests), the offline tables
of the feature repo's data folder (every Parquet file with a `user_id` column: the event log,
labelled impressions, the user feature tables), and the online store's rows of the user entity.
Other users' rows are left as they were.

What a running gateway still holds in memory (at most its flush interval of served rows and
events) lands on disk after this; run it again once the gateway has flushed, or stopped.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from scoring.core.privacy import expire, pseudonymizer
from scoring.core.served_events import KINDS, Kind, event_file
from scoring.core.settings import Settings
from scoring.core.targets import USER_JOIN_KEY


@dataclass(frozen=True, slots=True)
class Removed:
    """Rows of one user deleted from one place."""

    where: str  # served-feature log, events: <kind>, offline table, online store
    path: str
    rows: int


@dataclass(frozen=True, slots=True)
class ForgetReport:
    """What `forget_user` deleted (only places that held rows of the user are listed)."""

    pseudonym: str
    request_ids: int  # the user's requests found in the logs
    removed: list[Removed] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.removed)


def forget_user(settings: Settings, user_id: str, online: bool = True) -> ForgetReport:
    """Deletes `user_id`'s rows from the logs, the offline tables and the online store.

    Args:
        online: also delete the user's online-store rows (Feast: SQLite or Redis).
    """
    gw = settings.gateway
    pseudonym = pseudonymizer(settings.privacy)(user_id)
    users = {user_id, pseudonym}
    request_ids = _user_requests(gw.events_dir, gw.feature_log_dir, users)
    removed: list[Removed] = []
    for kind in KINDS:
        for path in _event_files(gw.events_dir, kind):
            n = _rewrite_jsonl(path, _event_of(kind, users, request_ids))
            if n:
                removed.append(Removed(f"events: {kind}", str(path), n))
    for path in _served_files(gw.feature_log_dir):
        n = _rewrite_parquet(path, _served_row_of(users, request_ids))
        if n:
            removed.append(Removed("served-feature log", str(path), n))
    data = settings.feast.repo_path / "data"
    for path in sorted(data.glob("*.parquet")):
        n = _rewrite_parquet(path, _offline_row_of(user_id))
        if n:
            removed.append(Removed("offline table", str(path), n))
    if online:
        from scoring.core import feast_compat, feature_repo

        store = feature_repo.open_store(settings.feast.repo_path, settings.feast.fs_yaml)
        n = feast_compat.delete_entity(store, USER_JOIN_KEY, user_id)
        if n:
            where = f"{store.config.online_store.type}, project {store.project}"
            removed.append(Removed("online store", where, n))
    return ForgetReport(pseudonym, len(request_ids), removed)


def expire_logs(settings: Settings, today: datetime | None = None) -> list[Path]:
    """Deletes the served-feature and event log day folders past their retention
    (SCORING_PRIVACY__FEATURE_LOG_RETENTION_DAYS, ..._EVENTS_RETENTION_DAYS)."""
    day = (today or datetime.now(UTC)).date()
    privacy = settings.privacy
    return [
        *expire(settings.gateway.feature_log_dir, privacy.feature_log_retention_days, day),
        *expire(settings.gateway.events_dir, privacy.events_retention_days, day),
    ]


def _event_files(directory: Path, kind: Kind) -> list[Path]:
    return sorted(directory.glob(str(event_file(Path(), kind, "*", "*"))))


def _served_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("target=*/date=*/part-*.parquet"))


def _json_lines(path: Path) -> Iterator[dict[str, Any]]:
    for line in path.read_text().splitlines():
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue


def _user_requests(events_dir: Path, feature_log_dir: Path, users: set[str]) -> set[str]:
    """The request ids of the user's Rank requests, from the event and served-feature logs."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ids = {
        str(e["request_id"])
        for path in _event_files(events_dir, "request")
        for e in _json_lines(path)
        if e.get("user") in users
    }
    for path in _served_files(feature_log_dir):
        names = pq.read_schema(path).names
        if "user_id" not in names or "request_id" not in names:
            continue
        table = pq.ParquetFile(path).read(columns=["user_id", "request_id"])
        mine = pc.is_in(table.column("user_id"), value_set=_strings(users))
        ids.update(table.filter(mine).column("request_id").to_pylist())
    return ids


def _event_of(
    kind: Kind, users: set[str], request_ids: set[str]
) -> Callable[[dict[str, Any]], bool]:
    if kind == "request":
        return lambda e: e.get("user") in users or e.get("request_id") in request_ids
    return lambda e: e.get("request_id") in request_ids


def _rewrite_jsonl(path: Path, drop: Callable[[dict[str, Any]], bool]) -> int:
    """Removes the lines `drop` selects, in place, under the file's lock (the gateway's event
    writer appends under it too, so nothing it writes meanwhile is lost)."""
    with path.open("r+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        lines = fh.read().splitlines(keepends=True)
        keep = []
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                keep.append(line)  # a torn last line: not ours to judge
                continue
            if not drop(event):
                keep.append(line)
        removed = len(lines) - len(keep)
        if removed:
            fh.seek(0)
            fh.write("".join(keep))
            fh.truncate()
            fh.flush()
            os.fsync(fh.fileno())
    return removed


def _strings(values: set[str]) -> Any:
    import pyarrow as pa

    return pa.array(sorted(values), type=pa.string())


def _string_column(table: Any, name: str) -> Any:
    import pyarrow as pa

    column = table.column(name)
    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    return column.cast(pa.string())


def _served_row_of(users: set[str], request_ids: set[str]) -> Callable[[Any], Any]:
    import pyarrow.compute as pc

    def select(table: Any) -> Any:
        mask = None
        if "user_id" in table.column_names:
            mask = pc.is_in(_string_column(table, "user_id"), value_set=_strings(users))
        if "request_id" in table.column_names and request_ids:
            ours = pc.is_in(_string_column(table, "request_id"), value_set=_strings(request_ids))
            mask = ours if mask is None else pc.or_(mask, ours)
        return mask

    return select


def _offline_row_of(user_id: str) -> Callable[[Any], Any]:
    import pyarrow.compute as pc

    def select(table: Any) -> Any:
        if USER_JOIN_KEY not in table.column_names:
            return None
        return pc.is_in(_string_column(table, USER_JOIN_KEY), value_set=_strings({user_id}))

    return select


def _rewrite_parquet(path: Path, select: Callable[[Any], Any]) -> int:
    """Removes the rows `select` marks (a boolean mask, or None: none); the file is replaced
    whole (temp file, rename), or deleted when nothing is left."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    # File by file: hive folder names (target=, date=) are not columns of the file.
    names = pq.read_schema(path).names
    if USER_JOIN_KEY not in names and "request_id" not in names:
        return 0
    table = pq.ParquetFile(path).read()
    mask = select(table)
    if mask is None:
        return 0
    mask = pc.fill_null(mask, False)
    removed = int(pc.sum(mask).as_py() or 0)
    if not removed:
        return 0
    kept = table.filter(pc.invert(mask))
    if kept.num_rows == 0 and path.parent.name.startswith("date="):
        path.unlink()
        return removed
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(kept, tmp)
    tmp.replace(path)
    return removed
