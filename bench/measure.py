"""Measured child processes for the benches that run the documented commands at scale.

`measure` runs a command as a child (its output goes to this terminal) and returns its wall
time, CPU time and peak resident memory: `wait4`'s ru_maxrss (the largest single process
of the child and its waited-for descendants) and the sum over the child's process tree,
sampled by `TreeMemory`, which kills the tree above a limit so that the machine stays usable.
`feature_repo_env` makes the private copy of the feature repo the commands write into, and
`import_argv` is the documented import of a shop log (bench/shop_log.py's files).

Shared by shop_scale_bench.py and build_engines_bench.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from rich.console import Console
from synthetic_repo import copy_feature_repo

ROOT = Path(__file__).resolve().parents[1]
SCORING = Path(sys.executable).parent / "scoring"  # the venv running the bench
console = Console()


@dataclass(frozen=True, slots=True)
class Measured:
    """One child process's measurements."""

    wall_s: float
    cpu_s: float  # user + system, the child's and its waited-for descendants'
    peak_tree_gib: float  # the sampled sum over the process tree
    peak_process_gib: float  # wait4 ru_maxrss
    status: str  # "ok", "exit N", "killed: ..."


class TreeMemory(threading.Thread):
    """Samples a process tree's resident memory (sum); kills the tree above `limit_gib`."""

    def __init__(self, pid: int, limit_gib: float, interval_s: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.limit_gib, self.interval_s = pid, limit_gib, interval_s
        self.peak_gib = 0.0
        self.killed = ""
        self.done = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self.done.is_set():
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = 0
            for proc in tree:
                try:
                    rss += proc.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak_gib = max(self.peak_gib, rss / 2**30)
            if rss / 2**30 > self.limit_gib and not self.killed:
                self.killed = f"killed: over {self.limit_gib:g} GiB resident"
                for proc in reversed(tree):
                    try:
                        proc.kill()
                    except psutil.NoSuchProcess:
                        pass
            time.sleep(self.interval_s)


def measure(
    argv: list[str], env: dict[str, str], cwd: Path, limit_gib: float, interval_s: float = 0.2
) -> Measured:
    """Runs `argv` as a child and measures it (its tree sampled every `interval_s`)."""
    started = time.monotonic()
    proc = subprocess.Popen(argv, env=env, cwd=cwd)
    watch = TreeMemory(proc.pid, limit_gib, interval_s)
    watch.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    watch.done.set()
    watch.join(timeout=2)
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    state = watch.killed or ("ok" if code == 0 else f"exit {code}")
    # ru_maxrss: KiB on Linux. A JVM's or worker's CPU is in the usage once they are reaped.
    cpu = usage.ru_utime + usage.ru_stime
    return Measured(wall, cpu, watch.peak_gib, usage.ru_maxrss / 2**20, state)


def feature_repo_env(repo: Path, **extra: str) -> dict[str, str]:
    """Copies the checkout's feature repo (without data) to `repo` and returns the child's
    environment: the scoring commands on that copy, with the `extra` variables."""
    copy_feature_repo(repo)
    env = {
        **os.environ,
        "SCORING_FEAST__REPO_PATH": str(repo),
        **extra,
        "PYTHONPATH": str(ROOT / "services"),
    }
    env.pop("SCORING_FEAST__FS_YAML", None)
    return env


def import_argv(log_dir: Path) -> list[str]:
    """`scoring data import` of the shop log in `log_dir` (events, items and users)."""
    return [
        str(SCORING),
        "data",
        "import",
        str(log_dir / "events.parquet"),
        "--items",
        str(log_dir / "items.parquet"),
        "--users",
        str(log_dir / "users.parquet"),
    ]
