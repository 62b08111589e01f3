"""A real shop's log through the user's documented path: import, train, evaluate, at two sizes.

    PYTHONPATH=services .venv/bin/python bench/shop_scale_bench.py            # 10M and 1M
    PYTHONPATH=services .venv/bin/python bench/shop_scale_bench.py --events 2000000 \
        --baseline-events 500000 --out /tmp/scale.md

For each size a log is generated (bench/shop_log.py: Zipf-popular items, heavy-tailed users,
90 days of views, clicks, add-to-carts and purchases with orders, an items and a users table)
and run, in a private feature repo, model repository and SQLite registry under a temporary
folder (never the checkout's), as separate child processes, each showing its own progress:

    scoring data import events.parquet --items items.parquet --users users.parquet
    scoring train --target item_ranker --holdout loo --no-report
    scoring evaluate --protocol loo --out report.md

Each step's wall time, CPU time (user + system) and peak resident memory (the child's own
`wait4` resource usage) go into a table beside the baseline size's, with the ratio; the
baseline shop is the main one scaled down (users and items in proportion to the events).
A step that passes --memory-limit GiB (resident, the child's process tree) is stopped so that
the machine stays usable; the table says so. Markdown of the table is written to --out.
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
from measure import ROOT, SCORING, console, feature_repo_env, import_argv, measure
from rich.table import Table
from shop_log import ShopLog, write_shop_log


@dataclass(frozen=True, slots=True)
class Step:
    """One child process's measurements."""

    name: str
    events: int
    wall_s: float
    cpu_s: float
    peak_gib: float
    status: str  # "ok", "exit N", "killed: ..."


def run_step(
    name: str, events: int, argv: list[str], env: dict[str, str], cwd: Path, limit_gib: float
) -> Step:
    """Runs one command as a child (its output goes to this terminal) and measures it."""
    console.rule(f"[bold]{name}[/] ({events:,} events): {' '.join(argv[1:])}")
    m = measure(argv, env, cwd, limit_gib, interval_s=0.5)
    # Peak: the child's (and its waited-for descendants') ru_maxrss.
    step = Step(name, events, m.wall_s, m.cpu_s, m.peak_process_gib, m.status)
    console.print(
        f"{name}: {m.status}, {m.wall_s:.0f} s wall, {step.cpu_s:.0f} s CPU, "
        f"{step.peak_gib:.2f} GiB peak"
    )
    return step


def pipeline(
    events: int, users: int, items: int, seed: int, work: Path, limit_gib: float
) -> tuple[ShopLog, list[Step]]:
    """Generates the log into `work` and runs the three commands there."""
    work.mkdir(parents=True, exist_ok=True)
    log_dir = work / "log"
    with console.status(f"generating {events:,} events ({users:,} users, {items:,} items)"):
        started = time.monotonic()
        shop = write_shop_log(log_dir, events, users, items, seed=seed)
    console.print(
        f"generated in {time.monotonic() - started:.0f} s: {shop.events:,} events of "
        f"{shop.users:,} users on {shop.items:,} items, {shop.orders:,} orders, {shop.kinds}"
    )
    env = feature_repo_env(
        work / "features",
        SCORING_TRITON__MODEL_REPOSITORY=str(work / "model_repository"),
        SCORING_REGISTRY__URL=f"sqlite:///{work / 'registry.db'}",
    )
    (work / "model_repository").mkdir(exist_ok=True)
    scoring = str(SCORING)
    commands = [
        ("import", import_argv(log_dir)),
        ("train", [scoring, "train", "--target", "item_ranker", "--holdout", "loo", "--no-report"]),
        ("evaluate", [scoring, "evaluate", "--protocol", "loo", "--out", str(work / "report.md")]),
    ]
    steps: list[Step] = []
    for name, argv in commands:
        steps.append(run_step(name, events, argv, env, work, limit_gib))
        if steps[-1].status != "ok":
            break  # the next step needs this one's output
    return shop, steps


def _rows(base: list[Step], main: list[Step]) -> list[list[str]]:
    rows = []
    by_name = {s.name: s for s in base}
    for step in main:
        ref = by_name.get(step.name)

        def ratio(a: float, b: float | None) -> str:
            return f"{a / b:.1f}x" if b else ""

        for s, is_main in ((ref, False), (step, True)):
            if s is None:
                continue
            rows.append(
                [
                    s.name,
                    f"{s.events:,}",
                    f"{s.wall_s:,.0f}",
                    f"{s.cpu_s:,.0f}",
                    f"{s.peak_gib:.2f}",
                    ratio(s.wall_s, ref.wall_s) if is_main and ref else "",
                    ratio(s.peak_gib, ref.peak_gib) if is_main and ref else "",
                    s.status,
                ]
            )
    return rows


HEADER = ["step", "events", "wall s", "CPU s", "peak GiB", "wall ratio", "peak ratio", "status"]


def markdown(rows: list[list[str]], title: str, notes: list[str]) -> str:
    right = {"events", "wall s", "CPU s", "peak GiB", "wall ratio", "peak ratio"}
    lines = [
        f"# {title}",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---:" if h in right else "---" for h in HEADER) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join([*lines, "", *notes, ""])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--baseline-events", type=int, default=1_000_000, help="0: none")
    parser.add_argument("--users", type=int, default=None, help="default: events / 15")
    parser.add_argument("--items", type=int, default=None, help="default: events / 100")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--memory-limit", type=float, default=21.0, help="GiB per step")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--tmp", type=Path, default=None, help="parent of the temporary folder")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "SHOP_SCALE.md")
    args = parser.parse_args()
    users = args.users or max(args.events // 15, 100)
    items = args.items or max(args.events // 100, 100)
    sizes = [args.events]
    if args.baseline_events:
        sizes.insert(0, args.baseline_events)
    work = Path(tempfile.mkdtemp(prefix="shop-scale-", dir=args.tmp))
    console.print(f"working in {work}")
    results: dict[int, tuple[ShopLog, list[Step]]] = {}
    try:
        for n in sizes:  # the baseline first: a failure at full size still leaves a table
            scale = n / args.events
            results[n] = pipeline(
                n,
                max(int(users * scale), 100),
                max(int(items * scale), 100),
                args.seed,
                work / f"{n}",
                args.memory_limit,
            )
    finally:
        if args.keep:
            console.print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    base = results[args.baseline_events][1] if args.baseline_events in results else []
    main_steps = results[args.events][1] if args.events in results else []
    rows = _rows(base if args.baseline_events != args.events else [], main_steps)
    title = f"Import, train, evaluate: {args.events:,} events"
    if args.baseline_events:
        title += f" beside {args.baseline_events:,}"
    table = Table(title=title)
    for h in HEADER:
        table.add_column(h, justify="left" if h in ("step", "status") else "right")
    for r in rows:
        table.add_row(*r)
    console.print(table)
    cpus = os.cpu_count()
    memory = psutil.virtual_memory().total / 2**30
    command = " ".join(["bench/shop_scale_bench.py", *sys.argv[1:]])
    notes = [
        f"Machine: {cpus} CPU cores, {memory:.0f} GiB memory, {platform.platform()}, "
        f"Python {sys.version.split()[0]}; `{command}`.",
        "Ratios are against the baseline size in the same run. Peak GiB: the child's peak "
        "resident memory (wait4 ru_maxrss); CPU s: user + system time.",
    ]
    for n, (shop, _) in results.items():
        notes.append(
            f"- {n:,} events: {shop.users:,} users and {shop.items:,} items with events, "
            f"{shop.orders:,} orders, {shop.kinds}."
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(markdown(rows, title, notes))
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
