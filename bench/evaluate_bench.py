"""`scoring evaluate` at a real shop's size: a generated N-event log through the read, the
leave-one-out split, the baselines' fit and their scoring, each step's time and peak memory.

    PYTHONPATH=services .venv/bin/python bench/evaluate_bench.py --events 10000000

The log: bench/shop_log.py's shop (Zipf-popular items, heavy-tailed users, 90 days of views,
clicks, add-to-carts and purchases with orders), read from its events.parquet.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from shop_log import write_shop_log

from scoring.evaluation import EvalProtocol, build_tasks, evaluate, load_interactions
from scoring.evaluation.baselines import BASELINES, fit_baselines

console = Console()


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


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
            write_shop_log(Path(tmp), args.events, args.users, args.items, seed=1)
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
