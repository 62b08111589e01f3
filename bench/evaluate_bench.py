"""`scoring evaluate` at a real shop's size: a generated N-event log through the read, the
leave-one-out split, the baselines' fit and their scoring, each step's time and peak memory.

    PYTHONPATH=services .venv/bin/python bench/evaluate_bench.py --events 10000000

The log: Zipf-popular items, users with Zipf-many events (a few heavy ones), 90 days, 70% views,
15% add-to-carts, 10% purchases, 5% clicks, written as events.parquet the way the build keeps it.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from scoring.evaluation import EvalProtocol, build_tasks, evaluate, load_interactions
from scoring.evaluation.baselines import BASELINES, fit_baselines

console = Console()


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_log(path: Path, events: int, users: int, items: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    user = (rng.zipf(1.6, events) - 1 + rng.integers(0, users, events)) % users
    item = (rng.zipf(1.2, events) - 1) % items
    item = (item * 7_919) % items  # popular items spread over the id range
    seconds = np.sort(rng.integers(0, 90 * 86_400, events)) + 1_760_000_000
    kinds = ["view", "add_to_cart", "purchase", "click"]
    kind = rng.choice(4, events, p=[0.70, 0.15, 0.10, 0.05]).astype(np.int8)

    def ids(prefix: str, n: int, codes: np.ndarray) -> pa.DictionaryArray:
        names = pa.array([f"{prefix}{k:08d}" for k in range(n)])
        return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), names)

    table = pa.table(
        {
            "user_id": ids("u", users, user),
            "item_id": ids("i", items, item),
            "event_type": pa.DictionaryArray.from_arrays(pa.array(kind), pa.array(kinds)),
            "timestamp": pa.array(seconds * 1_000_000_000, pa.timestamp("ns", tz="UTC")),
        }
    )
    pq.write_table(table, path / "events.parquet", row_group_size=1_000_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--max-users", type=int, default=5000)
    parser.add_argument("--full-catalogue", action="store_true")
    args = parser.parse_args()
    table = Table(title=f"scoring evaluate on {args.events:,} generated events")
    for col in ("step", "seconds", "peak RSS GiB", "note"):
        table.add_column(col, justify="left" if col in ("step", "note") else "right")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        with console.status("writing the log"):
            write_log(Path(tmp), args.events, args.users, args.items, seed=1)
        table.add_row("write log (not timed below)", f"{time.monotonic() - started:.1f}", "", "")
        steps = []
        t = time.monotonic()
        with console.status("reading"):
            frame = load_interactions(Path(tmp))
        steps.append(("load_interactions", f"{len(frame):,} positives"))
        table.add_row(
            steps[-1][0], f"{time.monotonic() - t:.1f}", f"{peak_gib():.2f}", steps[-1][1]
        )
        protocol = EvalProtocol("loo", max_users=args.max_users, full_catalogue=args.full_catalogue)
        t = time.monotonic()
        with console.status("splitting"):
            tasks = build_tasks(frame, protocol)
        del frame
        note = f"{tasks.n_users:,} users, {len(tasks.train):,} train rows"
        table.add_row(
            "build_tasks (loo, K=100)", f"{time.monotonic() - t:.1f}", f"{peak_gib():.2f}", note
        )
        t = time.monotonic()
        with console.status("fitting"):
            scorers = fit_baselines(tasks.train)
        table.add_row("fit_baselines", f"{time.monotonic() - t:.1f}", f"{peak_gib():.2f}", "")
        t = time.monotonic()
        with console.status("scoring"):
            report = evaluate(tasks, scorers, BASELINES)
        note = ", ".join(f"{n} {m['hr@10']:.3f}" for n, m in report.metrics.items())
        table.add_row(
            "evaluate", f"{time.monotonic() - t:.1f}", f"{peak_gib():.2f}", f"HR@10: {note}"
        )
    console.print(table)


if __name__ == "__main__":
    main()
