"""The gateway's direct feature read on one Redis node against a 3-master Redis Cluster, in one
run: the same repo, data and requests, both stores private redis-server processes on loopback.

1 user x N candidates, N in 10/100; the row cache off (every candidate read from Redis: the
cluster's extra work, one pipelined write per node in parallel, shows fully) and on (warm: only
the user's hash is read). Latency of sequential reads (p50/p99, interleaved blocks so both
stores see the same machine) and throughput with 8 concurrent reads on one event loop.

Run: `.venv/bin/python bench/redis_cluster_bench.py` (about a minute; `--quick` for less).
Writes bench/REDIS_CLUSTER.md. Needs redis-server and redis-cli (`make redis`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from synthetic_repo import synthetic_repo

from scoring.core import feature_repo
from scoring.core.targets import TARGETS
from scoring.devtools.redis_cluster import RedisCluster
from scoring.devtools.redis_server import RedisServer
from scoring.gateway.feature_source import FeatureRequest
from scoring.gateway.redis_source import RedisFeatureSource

ROOT = Path(__file__).resolve().parents[1]
SIZES = (10, 100)
CONCURRENT = 8
ROUNDS = {True: (4, 50), False: (10, 100)}  # quick or not: (blocks, reads per block)
TARGET = TARGETS["item_ranker"]
console = Console(width=140)


def build(work: Path, quick: bool) -> tuple[Path, Path, Path]:
    """A repo with one data set, applied once (a SQL registry on SQLite); two profiles of it:
    one node and the cluster (their online stores set through the environment per source)."""
    repo = synthetic_repo(work, *((300, 500) if quick else (1000, 2000)))
    single = repo / "feature_store.production.yaml"
    cluster = repo / "feature_store.cluster.yaml"
    # Two env variables, one per profile: both stores load from the same files and registry.
    single.write_text(single.read_text().replace("${FEAST_REDIS_CONNECTION}", "${BENCH_SINGLE}"))
    cluster.write_text(cluster.read_text().replace("${FEAST_REDIS_CONNECTION}", "${BENCH_CLUSTER}"))
    feature_repo.apply(repo, single)
    return repo, single, cluster


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000, q))


async def measure(
    sources: dict[str, RedisFeatureSource], n: int, rounds: int, per_round: int
) -> dict[str, dict[str, float]]:
    """p50/p99 of sequential reads (blocks alternating between the sources) and the
    throughput of CONCURRENT concurrent readers, per source."""
    some = next(iter(sources.values()))
    contract = some.contract(TARGET.feature_service)
    rng = random.Random(n)
    items = [f"i_{i:06d}" for i in range(500)]
    users = [f"u_{u:06d}" for u in range(300)]

    def request() -> FeatureRequest:
        ids = tuple(rng.sample(items, n))
        return FeatureRequest(contract, TARGET, rng.choice(users), ids, {"request_ts": 0})

    for source in sources.values():
        for _ in range(20):  # warm: connections, slot map, read plan
            await source.read(request())
    samples: dict[str, list[float]] = {name: [] for name in sources}
    names = list(sources)
    for r in range(rounds):
        for name in names[r % 2 :] + names[: r % 2]:
            for _ in range(per_round):
                req = request()
                t = time.perf_counter()
                await sources[name].read(req)
                samples[name].append(time.perf_counter() - t)
    out: dict[str, dict[str, float]] = {}
    for name, source in sources.items():
        total = rounds * per_round

        async def reader(source: RedisFeatureSource = source) -> None:
            for _ in range(total // CONCURRENT):
                await source.read(request())

        t = time.perf_counter()
        await asyncio.gather(*(reader() for _ in range(CONCURRENT)))
        rate = (total // CONCURRENT) * CONCURRENT / (time.perf_counter() - t)
        out[name] = {"p50": pct(samples[name], 50), "p99": pct(samples[name], 99), "rps": rate}
    return out


def run(quick: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="scoring-cluster-bench-"))
    rounds, per_round = ROUNDS[quick]
    rows: list[dict[str, Any]] = []
    try:
        with console.status("data, feast apply"):
            repo, single_yaml, cluster_yaml = build(work, quick)
        with RedisServer(work / "single") as single, RedisCluster(3, root=work / "cluster") as cl:
            os.environ["BENCH_SINGLE"] = single.address
            os.environ["BENCH_CLUSTER"] = cl.connection_string
            with console.status("materialize into one node and into the cluster"):
                feature_repo.materialize(repo, fs_yaml=single_yaml, full=True)
                feature_repo.materialize(repo, fs_yaml=cluster_yaml, full=True)
            for cache_rows in (0, 100_000):
                sources = {
                    "one node": RedisFeatureSource(repo, single_yaml, cache_rows=cache_rows),
                    "cluster (3 masters)": RedisFeatureSource(
                        repo, cluster_yaml, cache_rows=cache_rows
                    ),
                }
                for n in SIZES:
                    got = asyncio.run(measure(sources, n, rounds, per_round))
                    for name, m in got.items():
                        cache = "warm" if cache_rows else "off"
                        rows.append({"store": name, "N": n, "cache": cache, **m})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(rows, quick)


def rounds_note(quick: bool) -> int:
    rounds, per_round = ROUNDS[quick]
    return rounds * per_round


def report(rows: list[dict[str, Any]], quick: bool) -> None:
    table = Table(title="direct feature read: one Redis node vs a 3-master Redis Cluster")
    for col in ("row cache", "N", "store", "p50 ms", "p99 ms", f"req/s ({CONCURRENT} conc.)"):
        table.add_column(col, justify="right")
    lines = [
        "# Direct feature read: one Redis node vs a Redis Cluster",
        "",
        f"`bench/redis_cluster_bench.py{' --quick' if quick else ''}` on {platform.node()} "
        f"({os.cpu_count()} CPUs), {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Both stores are "
        "private redis-server processes on loopback; 1 user x N candidates, the read only "
        "(no inference). Cache off: every candidate's hash is read; warm: only the user's. "
        f"Latency: {rounds_note(quick)} sequential reads per row, in blocks alternating between "
        f"the stores; throughput: {CONCURRENT} concurrent readers on one event loop. The "
        "machine's cores are shared with other jobs: differences within about 15% are noise.",
        "",
        f"| row cache | N | store | p50 ms | p99 ms | req/s ({CONCURRENT} concurrent) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [r["cache"], str(r["N"]), r["store"], f"{r['p50']:.2f}", f"{r['p99']:.2f}"]
        cells.append(f"{r['rps']:.0f}")
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    (ROOT / "bench" / "REDIS_CLUSTER.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer users, items and reads")
    run(parser.parse_args().quick)


if __name__ == "__main__":
    main()
