"""Training at scale: in-memory, streamed and 2-process fits of one synthetic matrix.

    PYTHONPATH=services .venv/bin/python bench/training_scale_bench.py            # 1M, 5M rows
    PYTHONPATH=services .venv/bin/python bench/training_scale_bench.py --rows 500000 \
        --out /tmp/training.md

A synthetic training matrix (`--rows` x `--width` float32: numerics and a few categorical
columns, a click label from a known logit) is written once as Parquet shards
(scoring.trainer.streaming.ShardWriter, chunk by chunk, 65,536-row groups). Then each mode
fits the same model (scoring.trainer.model, the default ModelConfig) for `--epochs` epochs
in a child process of its own:

- in-memory: the matrix assembled in memory (as `scoring train` does today) and
  `scoring.trainer.train.fit`;
- streamed: `fit_streamed` from the shards (`scoring train --stream`);
- 2 processes: `fit_distributed` with processes=2, gloo (`scoring train --processes 2`).

Wall time and the peak resident memory of the child's whole process tree (sampled every
0.2 s; the 2-process run's ranks are grandchildren) go into one table, the in-memory run
being the baseline of the same run. No validation split or refit: only the fit is timed.
Every process uses cores // 2 torch threads (the 2-process ranks do so by themselves), so the
2-process run uses twice the cores of the others: its speed-up is per added core.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
MODES = ("in-memory", "streamed", "2 processes")
CHUNK = 100_000
N_CATEGORICAL = 8


def chunk(i: int, rows: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of chunk i (deterministic): numerics, then N_CATEGORICAL integer columns."""
    rng = np.random.default_rng([11, i])
    numeric = width - N_CATEGORICAL
    x = np.empty((rows, width), dtype=np.float32)
    x[:, :numeric] = rng.normal(size=(rows, numeric))
    x[:, numeric:] = rng.integers(0, 50, size=(rows, N_CATEGORICAL))
    logit = x[:, 0] - 0.5 * x[:, 1] + 0.8 * (x[:, numeric] % 5 == 0) - 1.0
    y = (rng.uniform(size=rows) < 1.0 / (1.0 + np.exp(-logit))).astype(np.float32)
    return x, y[:, None]


def chunks(rows: int, width: int) -> list[tuple[int, int]]:
    return [(i, min(CHUNK, rows - start)) for i, start in enumerate(range(0, rows, CHUNK))]


def write_matrix(path: Path, rows: int, width: int) -> None:
    from scoring.trainer.streaming import ShardWriter

    writer = ShardWriter(path, width, 1, False)
    for i, n in chunks(rows, width):
        writer.write(*chunk(i, n, width))
    writer.close()


def fresh_model(width: int) -> object:
    """The same initial model in every mode: statistics from the first chunk."""
    import torch

    from scoring.trainer.layout import Column
    from scoring.trainer.model import ModelConfig, build_model, fit_preprocessing

    numeric = width - N_CATEGORICAL
    columns = tuple(
        Column(f"f{j}", "numeric" if j < numeric else "categorical", j >= numeric)
        for j in range(width)
    )
    x, _ = chunk(0, min(CHUNK, 20_000), width)
    torch.manual_seed(7)
    model = build_model(fit_preprocessing(x, columns, ("numeric", "categorical")), ModelConfig(), 1)
    model.set_reference(torch.from_numpy(x))
    return model


def child(mode: str, shards: Path, rows: int, width: int, epochs: int) -> None:
    """One fit (run in a child process by the parent)."""
    import torch

    # One intra-op thread a process in every mode: the 2-process ranks take cores // 2 each,
    # and on a shared machine more threads than free cores only spin.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    from scoring.trainer.distributed import fit_distributed
    from scoring.trainer.streaming import TrainingShards, fit_streamed
    from scoring.trainer.train import TrainConfig, fit

    model = fresh_model(width)
    cfg = TrainConfig(epochs=epochs)
    if mode == "in-memory":
        x = np.empty((rows, width), dtype=np.float32)
        y = np.empty((rows, 1), dtype=np.float32)
        for i, n in chunks(rows, width):
            x[i * CHUNK : i * CHUNK + n], y[i * CHUNK : i * CHUNK + n] = chunk(i, n, width)
        _, history = fit(model, x, y, cfg)  # type: ignore[arg-type]
    elif mode == "streamed":
        _, history = fit_streamed(model, [TrainingShards.open(shards)], cfg)
    else:
        cfg2 = TrainConfig(epochs=epochs, stream=True, processes=2)
        _, history, _ = fit_distributed(model, [TrainingShards.open(shards)], cfg2)
    print(f"loss {history[-1]['train_logloss']:.4f}")  # noqa: T201


@dataclass(frozen=True, slots=True)
class Run:
    rows: int
    mode: str
    wall_s: float
    peak_gib: float
    loss: str
    status: str


def tree_rss(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_mode(mode: str, shards: Path, rows: int, width: int, epochs: int) -> Run:
    argv = [sys.executable, __file__, "--child", mode, "--shards", str(shards)]
    argv += ["--rows", str(rows), "--width", str(width), "--epochs", str(epochs)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "services")}
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                peak = max(peak, tree_rss(root))
            except psutil.NoSuchProcess:
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    out, _ = proc.communicate()
    wall = time.monotonic() - started
    done.set()
    watcher.join(timeout=2)
    loss = out.strip().rsplit("loss ", 1)[-1] if "loss " in out else ""
    status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}"
    run = Run(rows, mode, wall, peak / 2**30, loss, status)
    print(f"{rows:,} {mode}: {status}, {wall:.1f} s, {run.peak_gib:.2f} GiB peak, loss {loss}")  # noqa: T201
    return run


def markdown(runs: list[Run], width: int, epochs: int, command: str) -> str:
    header = ["rows", "mode", "wall s", "rows/s", "peak RSS GiB (tree)", "vs in-memory peak"]
    header += ["train loss", "status"]
    lines = [
        "# Training at scale: in-memory, streamed and data-parallel fits",
        "",
        f"{width} float32 columns a row, {epochs} epoch(s), batch 512 (256 a rank with 2 "
        f"processes), default model, {max(1, (os.cpu_count() or 1) // 2)} torch thread(s) a "
        f"process; {platform.node()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} at the end (a machine shared with other work).",
        "",
        "| " + " | ".join(header) + " |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        base = next(b for b in runs if b.rows == r.rows)
        ratio = f"{r.peak_gib / base.peak_gib:.2f}x" if base.peak_gib else ""
        cells = [f"{r.rows:,}", r.mode, f"{r.wall_s:,.1f}", f"{r.rows * epochs / r.wall_s:,.0f}"]
        cells += [f"{r.peak_gib:.2f}", ratio, r.loss, r.status]
        lines.append("| " + " | ".join(cells) + " |")
    sizes = sorted({r.rows for r in runs})
    if len(sizes) > 1:
        lines.append("")
        for mode in MODES:
            lo, hi = (
                next(r for r in runs if r.rows == n and r.mode == mode)
                for n in (sizes[0], sizes[-1])
            )
            matrix = (hi.rows - lo.rows) * width * 4 / 2**30
            lines.append(
                f"- {mode}: peak {lo.peak_gib:.2f} -> {hi.peak_gib:.2f} GiB from {lo.rows:,} to "
                f"{hi.rows:,} rows ({hi.peak_gib - lo.peak_gib:+.2f} GiB for "
                f"{matrix:.2f} GiB more matrix)."
            )
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, action="append", help="repeatable; 1M and 5M")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "TRAINING_SCALE.md")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--shards", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sizes = args.rows or [1_000_000, 5_000_000]
    if args.child:
        child(args.child, args.shards, sizes[0], args.width, args.epochs)
        return
    runs = []
    for rows in sizes:
        with tempfile.TemporaryDirectory(prefix="training-scale-") as tmp:
            shards = Path(tmp) / "shards"
            started = time.monotonic()
            write_matrix(shards, rows, args.width)
            print(f"{rows:,} rows: shards written in {time.monotonic() - started:.1f} s")  # noqa: T201
            runs += [run_mode(m, shards, rows, args.width, args.epochs) for m in MODES]
    command = "PYTHONPATH=services .venv/bin/python bench/training_scale_bench.py " + " ".join(
        sys.argv[1:]
    )
    args.out.write_text(markdown(runs, args.width, args.epochs, command.strip()))
    print(args.out.read_text())  # noqa: T201


if __name__ == "__main__":
    main()
