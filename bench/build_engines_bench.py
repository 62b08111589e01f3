"""The feature build on both engines: pandas (in one process) and Spark (local mode), by size.

    PYTHONPATH=services .venv/bin/python bench/build_engines_bench.py            # 1M, 10M, 30M
    PYTHONPATH=services .venv/bin/python bench/build_engines_bench.py --events 1000000 \
        --events 3000000 --out /tmp/engines.md

For each size a shop log is generated once (bench/shop_log.py, the shop of
bench/shop_scale_bench.py) and imported into a private copy of the feature repo with each
engine, as a child process (the documented command, without registering the definitions):

    scoring data import events.parquet --items items.parquet --users users.parquet \
        --no-register --engine pandas|spark

Each run's wall time, CPU time and peak resident memory go into one table. The peak is the
sum over the child's whole process tree (Python driver, Spark's JVM and its Python workers),
sampled every 0.2 s, since Spark's memory is spread over several processes; `wait4`'s
ru_maxrss (the largest single process) is shown beside it. A run above --memory-limit GiB is
stopped (the table says so: the engine's failure point on this machine); a size whose pandas
run failed still runs on Spark. The Spark runs use settings.spark (SCORING_SPARK__MASTER,
default local[2]; SCORING_SPARK__DRIVER_MEMORY, default 1g).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from measure import ROOT, console, feature_repo_env, import_argv, measure
from rich.table import Table
from shop_log import write_shop_log

ENGINES = ("pandas", "spark")


@dataclass(frozen=True, slots=True)
class Run:
    """One import's measurements."""

    engine: str
    events: int
    wall_s: float
    cpu_s: float
    peak_tree_gib: float
    peak_process_gib: float
    status: str  # "ok", "exit N", "killed: ..."


def run_import(engine: str, events: int, log_dir: Path, work: Path, limit_gib: float) -> Run:
    """One `scoring data import` with `engine` into a fresh copy of the feature repo."""
    repo = work / f"features-{engine}"
    shutil.rmtree(repo, ignore_errors=True)
    env = feature_repo_env(repo, SCORING_SPARK__LOCAL_DIR=str(work / "spark-local"))
    argv = [*import_argv(log_dir), "--no-register", "--engine", engine]
    console.rule(f"[bold]{engine}[/] ({events:,} events)")
    m = measure(argv, env, work, limit_gib)
    # The JVM's and the Python workers' CPU is in the children's usage once they are reaped.
    run = Run(engine, events, m.wall_s, m.cpu_s, m.peak_tree_gib, m.peak_process_gib, m.status)
    console.print(
        f"{engine} {events:,}: {m.status}, {m.wall_s:.0f} s wall, {run.cpu_s:.0f} s CPU, "
        f"{run.peak_tree_gib:.2f} GiB peak (tree)"
    )
    shutil.rmtree(repo / "data", ignore_errors=True)  # the next run needs the disk
    return run


HEADER = [
    "events",
    "engine",
    "wall s",
    "CPU s",
    "peak GiB (tree)",
    "peak GiB (largest process)",
    "vs pandas 1M peak",
    "status",
]


def rows(runs: list[Run]) -> list[list[str]]:
    base = next((r for r in runs if r.engine == "pandas" and r.status == "ok"), None)
    out = []
    for r in runs:
        ratio = f"{r.peak_tree_gib / base.peak_tree_gib:.2f}x" if base else ""
        out.append(
            [
                f"{r.events:,}",
                r.engine,
                f"{r.wall_s:,.0f}",
                f"{r.cpu_s:,.0f}",
                f"{r.peak_tree_gib:.2f}",
                f"{r.peak_process_gib:.2f}",
                ratio,
                r.status,
            ]
        )
    return out


def markdown(table: list[list[str]], notes: list[str]) -> str:
    lines = [
        "# Feature build: pandas and Spark engines by log size",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" if h in ("engine", "status") else "---:" for h in HEADER) + "|",
        *("| " + " | ".join(r) + " |" for r in table),
        "",
        *notes,
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, action="append", help="repeatable; 1M 10M 30M")
    parser.add_argument("--engine", choices=ENGINES, action="append", help="default: both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--memory-limit", type=float, default=21.0, help="GiB per run")
    parser.add_argument("--tmp", type=Path, default=None, help="parent of the temporary folder")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "BUILD_ENGINES.md")
    args = parser.parse_args()
    sizes = args.events or [1_000_000, 10_000_000, 30_000_000]
    engines = args.engine or list(ENGINES)
    work = Path(tempfile.mkdtemp(prefix="build-engines-", dir=args.tmp))
    console.print(f"working in {work}")
    runs: list[Run] = []
    notes: list[str] = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        for n in sorted(sizes):
            log_dir = work / f"log-{n}"
            with console.status(f"generating {n:,} events"):
                shop = write_shop_log(log_dir, n, max(n // 15, 100), max(n // 100, 100), args.seed)
            notes.append(
                f"- {n:,} events: {shop.users:,} users and {shop.items:,} items with events, "
                f"{shop.orders:,} orders."
            )
            for engine in engines:
                runs.append(run_import(engine, n, log_dir, work, args.memory_limit))
            shutil.rmtree(log_dir, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    table = Table(title="Feature build by engine")
    for h in HEADER:
        table.add_column(h, justify="left" if h in ("engine", "status") else "right")
    for r in rows(runs):
        table.add_row(*r)
    console.print(table)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    command = " ".join(["bench/build_engines_bench.py", *sys.argv[1:]])
    header = [
        f"Machine: {os.cpu_count()} CPU cores, {psutil.virtual_memory().total / 2**30:.0f} GiB "
        f"memory, {platform.platform()}, Python {sys.version.split()[0]}. Run {started}; load "
        f"average at the end {load}. Command: `{command}`.",
        "Peak GiB (tree): the sum of resident memory over the import's process tree (driver, "
        "JVM, Python workers), sampled every 0.2 s; largest process: wait4 ru_maxrss. "
        "`vs pandas 1M peak`: against the smallest size's pandas run of this table.",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows(runs), [*header, *notes]))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
