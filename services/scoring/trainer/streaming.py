"""Training from Parquet shards: the training matrix in row groups, read back in shuffled batches.

`TrainingShards` is a folder of Parquet files holding the assembled float32 matrix (column
"x", a fixed-size list of `width` floats a row), the labels ("y", a fixed-size list of
`tasks` floats) and, when rows are weighted, their weights ("w", float64). Files hold whole
row groups of `row_group_rows` rows (the last one may be shorter).

`BatchReader` reads them back with bounded memory: every epoch a seeded shuffle of all row
groups, of which a rank takes every world-th (rank::world); then `buffer_groups` row groups
at a time are loaded, shuffled together and cut into batches, the rows left over (fewer than
a batch) carried into the next window. At most `buffer_groups * row_group_rows + batch_size`
rows are resident, whatever the number of rows (`max_buffered_rows` records the peak).

`fit_streamed` is `scoring.trainer.train.fit` on shards: the same loss, optimiser and early
stopping, in one process; `scoring.trainer.distributed` runs the same loop data-parallel.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from scoring.trainer.fit_loop import ProgressHook, fit_epochs, optimiser, step, weighted_bce

logger = logging.getLogger(__name__)

ROW_GROUP_ROWS = 65_536
GROUPS_PER_FILE = 16
BUFFER_GROUPS = 4
FEATURES, LABELS, WEIGHTS = "x", "y", "w"
_META = b"scoring.training_shards"


@dataclass(frozen=True, slots=True)
class TrainingShards:
    """A written shard folder: its files in order and the matrix's shape."""

    path: Path
    files: tuple[Path, ...]
    rows: int
    width: int
    tasks: int
    weighted: bool

    @classmethod
    def open(cls, path: Path) -> TrainingShards:
        """The shards in `path` (files part-00000.parquet ... in order)."""
        files = tuple(sorted(path.glob("part-*.parquet")))
        if not files:
            raise FileNotFoundError(f"{path}: no part-*.parquet training shards")
        meta = json.loads(pq.read_schema(files[0]).metadata[_META])
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        return cls(path, files, rows, meta["width"], meta["tasks"], meta["weighted"])

    def units(self) -> list[tuple[Path, int, int]]:
        """(file, row group index, rows) of every row group, in write order."""
        out = []
        for f in self.files:
            meta = pq.ParquetFile(f).metadata
            out += [(f, i, meta.row_group(i).num_rows) for i in range(meta.num_row_groups)]
        return out

    def read_all(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The whole matrix, labels and weights (None if unweighted): for tests and tools."""
        parts = [
            _read_unit(f, i, self.width, self.tasks, self.weighted) for f, i, _ in self.units()
        ]
        x = np.concatenate([p[0] for p in parts])
        y = np.concatenate([p[1] for p in parts])
        w = np.concatenate([p[2] for p in parts]) if self.weighted else None
        return x, y, w


class ShardWriter:
    """Appends (x, y, w) chunks to a shard folder in fixed-size row groups.

    Chunks may have any number of rows; rows are buffered until a row group is full, so a
    caller can assemble the matrix piece by piece. `close()` flushes the last, shorter group.
    """

    def __init__(
        self,
        path: Path,
        width: int,
        tasks: int,
        weighted: bool,
        row_group_rows: int = ROW_GROUP_ROWS,
        groups_per_file: int = GROUPS_PER_FILE,
    ) -> None:
        if row_group_rows < 1 or groups_per_file < 1:
            raise ValueError("row_group_rows and groups_per_file must be at least 1")
        path.mkdir(parents=True, exist_ok=False)
        self.path, self.width, self.tasks, self.weighted = path, width, tasks, weighted
        self.row_group_rows, self.groups_per_file = row_group_rows, groups_per_file
        fields = [
            pa.field(FEATURES, pa.list_(pa.float32(), width), nullable=False),
            pa.field(LABELS, pa.list_(pa.float32(), tasks), nullable=False),
        ]
        if weighted:
            fields.append(pa.field(WEIGHTS, pa.float64(), nullable=False))
        meta = {"width": width, "tasks": tasks, "weighted": weighted}
        self.schema = pa.schema(fields, metadata={_META: json.dumps(meta).encode()})
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        self._pending_rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._files = 0
        self._groups_in_file = 0
        self.rows = 0

    def write(self, x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> None:
        """Appends rows: x [n, width] float32, y [n, tasks], w [n] when weighted."""
        if x.ndim != 2 or x.shape[1] != self.width or y.shape != (len(x), self.tasks):
            raise ValueError(
                f"x {x.shape} / y {y.shape}: expected [n, {self.width}] / [n, {self.tasks}]"
            )
        if (w is not None) != self.weighted:
            raise ValueError(f"weights given: {w is not None}, shards weighted: {self.weighted}")
        self._pending.append((x, y, w))
        self._pending_rows += len(x)
        while self._pending_rows >= self.row_group_rows:
            self._flush(self.row_group_rows)

    def close(self) -> TrainingShards:
        """Writes the rows left and returns the shards."""
        if self._pending_rows:
            self._flush(self._pending_rows)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._files == 0:  # no rows: one empty file keeps the schema
            pq.write_table(self.schema.empty_table(), self.path / "part-00000.parquet")
        return TrainingShards.open(self.path)

    def _flush(self, n: int) -> None:
        x = np.concatenate([p[0] for p in self._pending])
        y = np.concatenate([p[1] for p in self._pending])
        w = np.concatenate([p[2] for p in self._pending]) if self.weighted else None
        rest = (x[n:], y[n:], None if w is None else w[n:])
        self._pending = [rest] if len(rest[0]) else []
        self._pending_rows = len(rest[0])
        columns = [
            _fixed_list(x[:n], self.width, pa.float32()),
            _fixed_list(y[:n], self.tasks, pa.float32()),
        ]
        if w is not None:
            columns.append(pa.array(w[:n].astype(np.float64)))
        if self._writer is None or self._groups_in_file == self.groups_per_file:
            if self._writer is not None:
                self._writer.close()
            name = self.path / f"part-{self._files:05d}.parquet"
            self._writer = pq.ParquetWriter(name, self.schema, compression="none")
            self._files += 1
            self._groups_in_file = 0
        self._writer.write_table(
            pa.Table.from_arrays(columns, schema=self.schema), row_group_size=n
        )
        self._groups_in_file += 1
        self.rows += n


def write_shards(
    path: Path,
    x: np.ndarray,
    y: np.ndarray,
    w: np.ndarray | None = None,
    row_group_rows: int = ROW_GROUP_ROWS,
    groups_per_file: int = GROUPS_PER_FILE,
) -> TrainingShards:
    """Writes a whole matrix (labels, weights) as shards into the new folder `path`."""
    y2 = y.reshape(len(y), -1)
    writer = ShardWriter(
        path, x.shape[1], y2.shape[1], w is not None, row_group_rows, groups_per_file
    )
    writer.write(x, y2, w)
    return writer.close()


def _fixed_list(a: np.ndarray, size: int, kind: pa.DataType) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(a, dtype=np.float32).reshape(-1), type=kind)
    return pa.FixedSizeListArray.from_arrays(flat, size)


def _read_unit(
    file: Path, group: int, width: int, tasks: int, weighted: bool, handle: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    table = (handle or pq.ParquetFile(file)).read_row_group(group)
    # Writable copies: torch takes them without a warning, and no Arrow buffer stays pinned.
    x = _numpy(table.column(FEATURES).combine_chunks().flatten()).reshape(-1, width)
    y = _numpy(table.column(LABELS).combine_chunks().flatten()).reshape(-1, tasks)
    w = _numpy(table.column(WEIGHTS).combine_chunks()) if weighted else None
    return x, y, w


def _numpy(array: pa.Array) -> np.ndarray:
    out: np.ndarray = array.to_numpy(zero_copy_only=False, writable=True)
    return out


@dataclass(frozen=True, slots=True)
class Batch:
    x: np.ndarray
    y: np.ndarray
    w: np.ndarray | None

    def targets(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The labels and the weights (float32; None if unweighted) as tensors on `device`."""
        y = torch.from_numpy(self.y).to(device)
        w = None if self.w is None else torch.from_numpy(self.w.astype(np.float32)).to(device)
        return y, w


class BatchReader:
    """Shuffled batches from shards with bounded memory; seeded, so deterministic.

    Args:
        shards: one or more shard folders of the same width, tasks and weighting, read as one.
        batch_size: rows a batch (the last batch of an epoch may be shorter).
        buffer_groups: row groups shuffled together (the memory bound, with the group size).
        rank, world: this reader takes every world-th row group of each epoch's shuffle.
            With world > 1 each rank yields the same number of batches (the smallest any
            rank has), so that every data-parallel step has all ranks in it.
    """

    def __init__(
        self,
        shards: Sequence[TrainingShards],
        batch_size: int,
        seed: int,
        buffer_groups: int = BUFFER_GROUPS,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        if not shards:
            raise ValueError("no shards to read")
        first = shards[0]
        for s in shards:
            if (s.width, s.tasks, s.weighted) != (first.width, first.tasks, first.weighted):
                raise ValueError(f"{s.path}: shards differ in width, tasks or weighting")
        if batch_size < 1 or buffer_groups < 1 or not 0 <= rank < world:
            raise ValueError(f"batch {batch_size}, buffer {buffer_groups}, rank {rank}/{world}")
        self.width, self.tasks, self.weighted = first.width, first.tasks, first.weighted
        self.units = [u for s in shards for u in s.units() if u[2] > 0]
        if len(self.units) < world:
            raise ValueError(
                f"{len(self.units)} row groups for {world} processes: write smaller row groups"
            )
        self.rows = sum(u[2] for u in self.units)
        self.batch_size, self.seed, self.buffer_groups = batch_size, seed, buffer_groups
        self.rank, self.world = rank, world
        self.max_buffered_rows = 0

    def _order(self, epoch: int) -> list[int]:
        """This rank's row groups in `epoch` (the global shuffle is the same on every rank)."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.units))
        return [int(i) for i in order]

    def batches_per_epoch(self, epoch: int) -> int:
        """Batches `epoch` yields on this rank: with world > 1, the fewest any rank has."""
        order = self._order(epoch)
        counts = [
            math.ceil(sum(self.units[i][2] for i in order[r :: self.world]) / self.batch_size)
            for r in range(self.world)
        ]
        return min(counts) if self.world > 1 else counts[0]

    def epoch(self, epoch: int) -> Iterator[Batch]:
        """The shuffled batches of one epoch on this rank."""
        limit = self.batches_per_epoch(epoch)
        mine = self._order(epoch)[self.rank :: self.world]
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        handles: dict[Path, Any] = {}
        carry: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]] = []
        emitted = 0
        for start in range(0, len(mine), self.buffer_groups):
            parts = list(carry)
            for i in mine[start : start + self.buffer_groups]:
                f, g, _ = self.units[i]
                if f not in handles:
                    handles[f] = pq.ParquetFile(f)
                parts.append(_read_unit(f, g, self.width, self.tasks, self.weighted, handles[f]))
            x, y, w = _concat(parts, self.weighted)
            del parts
            self.max_buffered_rows = max(self.max_buffered_rows, len(x))
            perm = rng.permutation(len(x))
            x, y = x[perm], y[perm]
            w = None if w is None else w[perm]
            full = len(x) - len(x) % self.batch_size
            for b in range(0, full, self.batch_size):
                if emitted == limit:
                    return
                end = b + self.batch_size
                yield Batch(x[b:end], y[b:end], None if w is None else w[b:end])
                emitted += 1
            carry = [(x[full:], y[full:], None if w is None else w[full:])] if full < len(x) else []
        if carry and emitted < limit:
            yield Batch(*carry[0])

    def sequential(self) -> Iterator[Batch]:
        """Every row group of this reader in write order, one at a time (for evaluation)."""
        handles: dict[Path, Any] = {}
        for f, g, _ in self.units:
            if f not in handles:
                handles[f] = pq.ParquetFile(f)
            x, y, w = _read_unit(f, g, self.width, self.tasks, self.weighted, handles[f])
            self.max_buffered_rows = max(self.max_buffered_rows, len(x))
            yield Batch(x, y, w)


def _concat(
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray | None]], weighted: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    w = np.concatenate([p[2] for p in parts]) if weighted else None
    return x, y, w


class Logits(nn.Module):
    """The model's training path (`Ranker.logits`) as `forward`, so DDP can wrap it."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.model.logits(x)
        return out


def batch_loss(
    logits: torch.Tensor, batch: Batch, task_weights: torch.Tensor, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weighted loss to minimise, per-task BCE) of a batch, as `train.fit` computes them."""
    return weighted_bce(logits, *batch.targets(device), task_weights)


def train_epoch(
    reader: BatchReader,
    epoch: int,
    optimizer: torch.optim.Optimizer,
    forward: nn.Module,
    task_weights: torch.Tensor,
    device: torch.device,
) -> tuple[float, int]:
    """One optimiser step a batch of the reader's `epoch`: (sum of the batches' click BCE
    times their rows, rows)."""
    total, rows = 0.0, 0
    for batch in reader.epoch(epoch):
        x = torch.from_numpy(batch.x).to(device)
        total += step(optimizer, forward, x, *batch.targets(device), task_weights) * len(x)
        rows += len(x)
    return total, rows


def valid_logloss(model: Any, valid: BatchReader, device: torch.device) -> float:
    """Click logloss over every validation row, read one row group at a time."""
    model.eval()
    total, rows = 0.0, 0
    with torch.no_grad():
        for batch in valid.sequential():
            logits = model.logits(torch.from_numpy(batch.x).to(device))[:, 0]
            y = torch.from_numpy(batch.y[:, 0]).to(device)
            loss = nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="sum")
            total += float(loss)
            rows += len(batch.x)
    return total / max(rows, 1)


def fit_streamed(
    model: Any,
    train: Sequence[TrainingShards],
    cfg: Any,
    valid: Sequence[TrainingShards] | None = None,
    on_progress: ProgressHook | None = None,
    buffer_groups: int = BUFFER_GROUPS,
) -> tuple[Any, list[dict[str, float]]]:
    """`scoring.trainer.train.fit` on shards, in this process, with bounded memory.

    `cfg` is a TrainConfig. Same loss, optimiser, early stopping on `valid` (patience, best
    epoch's weights kept); the batches come from a `BatchReader`, so the order differs from
    the in-memory fit and so do the weights (not the quality).

    Returns:
        The fitted model (on CPU, eval mode) and per-epoch losses.
    """
    torch.manual_seed(cfg.seed)
    device = torch.device(cfg.device)
    model = model.to(device)
    reader = BatchReader(train, cfg.batch_size, cfg.seed, buffer_groups)
    valid_reader = BatchReader(valid, cfg.batch_size, cfg.seed) if valid else None
    optimizer, task_weights = optimiser(model, cfg, reader.tasks, device)
    forward = Logits(model)

    def epoch_loss(epoch: int) -> float:
        total, rows = train_epoch(reader, epoch, optimizer, forward, task_weights, device)
        return total / max(rows, 1)

    valid_loss = (
        None if valid_reader is None else partial(valid_logloss, model, valid_reader, device)
    )
    history = fit_epochs(model, cfg, epoch_loss, valid_loss, on_progress)
    return model.cpu().eval(), history
