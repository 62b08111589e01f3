"""Per-request server-side costs for docs/sizing.md, measured on this machine in one run, and the
sizing they give for a shop of 10M users, 1M items and 5,000 requests/s.

Measured here (a private redis-server on a free loopback port, the repo's feature views
materialised into it from a synthetic data set):

- Redis CPU per Rank request's feature read: the gateway's own read (RedisFeatureSource: one
  pipelined write of one HMGET per entity key, as packed by its read plan) for 1 user x N
  candidates, N in 10/100/500, its candidate cache off (every candidate's hash read) and warm
  (every item cached first: only the user's hash is read). From the server's own counters: INFO
  cpu (used_cpu_user + used_cpu_sys) over a block of sequential reads, less the server's idle
  CPU over the same wall time, and INFO commandstats (HMGET calls and usec). Baseline in the
  same run: one PING a request (a round trip's fixed cost on the server).
- Redis memory per entity key (MEMORY USAGE of every user, item, activity and bundle key, and
  the INFO memory growth over the key count), to size 10M users + 1M items.
- The model's latency by batch size on the CPU (scoring.trainer.latency, as `scoring
  model-latency`), for an item_ranker DCN of the real input width (untrained weights on rows
  read from the store: its time does not depend on them), and its multiply-adds a row.

Read from the other benches' latest files (stated in the output): the gateway's CPU a request
(bench/RESULTS.md), Triton's CPU a request (bench/WORKERS.md), the feature build's events per
CPU-second (bench/BUILD_ENGINES.md when present, else bench/SHOP_SCALE.md's pandas import).
Assumed (constants below, stated in the output): the workload, the target utilisation, node
sizes, the events a user a year, and the GPU throughput (no GPU here).

Run: `.venv/bin/python bench/sizing_bench.py` (a few minutes; `--quick` for less). Writes
bench/SIZING.md. Needs redis-server (`make redis`).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import random
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis
import torch
from rich.console import Console
from rich.table import Table
from synthetic_repo import synthetic_repo

from scoring.core import feature_repo
from scoring.core.targets import TARGETS, USER_ENTITY
from scoring.devtools.redis_server import RedisServer
from scoring.gateway.feature_source import FeatureRequest
from scoring.gateway.redis_source import RedisFeatureSource
from scoring.trainer.export import export_torchscript
from scoring.trainer.latency import measure as model_latency
from scoring.trainer.layout import column_layout, feature_groups
from scoring.trainer.model import ModelConfig, build_model, fit_preprocessing

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
TARGET = TARGETS["item_ranker"]
SIZES = (10, 100, 500)
BATCHES = (1, 10, 100, 500, 1000)
JOIN_KEYS = ("user_id", "item_id", "activity_id", "bundle_id")
console = Console(width=150)
FIELDS: dict[str, int] = {}  # fields of the user's and of a candidate's HMGET (read plan)

# The workload and the assumptions of the sizing (docs/sizing.md explains each).
USERS = 10_000_000
ITEMS = 1_000_000
ACTIVITIES = 10_000  # campaigns, promotions, bundles: assumed, small beside the rest
RPS = 5_000
N_TYPICAL = 100
UTILISATION = 0.5  # CPU target: a zone or node lost, a traffic peak of 2x, still under 100%
EVENTS_PER_USER_YEAR = 300
BUILD_WINDOW_H = 2.0  # the daily build of a year of events finishes in this time
EXECUTOR_CORES = 4
REDIS_NODE_GIB = 64  # RAM of one Redis node
REDIS_MAXMEMORY = 0.5  # of it for data: fork copy-on-write (RDB/AOF rewrite), buffers
FRAGMENTATION = 1.3  # allocator overhead on top of used_memory, assumed
REDIS_MIN_MASTERS = 3  # a Redis Cluster's minimum
REPLICAS = 1  # per master, for failover
GATEWAY_HOST_CORES = 8
# GPU: assumed, none here. An H100's FP32 (non-tensor-core) peak is 67 TFLOPS (NVIDIA's H100
# SXM datasheet); a skinny MLP of a few thousand multiply-adds a row reaches a small part of it:
# 5% assumed. A batch also pays kernel launches whatever its size: 0.3 ms assumed (about 40
# kernels of a TorchScript DCN at 5-8 us each).
GPU_PEAK_FLOPS = 67e12
GPU_EFFICIENCY = 0.05
GPU_BATCH_FLOOR_MS = 0.3
GPUS_MIN = 2  # one per zone: a GPU host lost keeps serving


@dataclass
class TunableRedis(RedisServer):
    """A private redis-server whose hash encoding limit can change between starts (a restart
    reloads the data set from its RDB file, each hash re-encoded under the new limit)."""

    listpack_entries: int = 512  # Redis 7's default

    def server_args(self) -> list[str]:
        return [*super().server_args(), "--hash-max-listpack-entries", str(self.listpack_entries)]


# The two encodings measured: Redis's default keeps a user's hash (a few hundred small fields)
# as one listpack, which HMGET scans field by field; a limit below its field count makes it a
# hash table (more memory, a lookup a field).
CONFIGS = {512: "default", 128: "hash-max-listpack-entries 128"}


@dataclass(frozen=True, slots=True)
class RedisCost:
    """Redis server CPU for one request's read, microseconds."""

    config: str
    label: str
    n: int
    cache: str
    requests: int
    cpu_us: float  # used_cpu delta a request, idle CPU subtracted
    hmget_calls: float  # HMGETs a request (commandstats)
    hmget_us: float  # commandstats usec a request (command execution only)
    out_bytes: float  # bytes the server sent a request (INFO stats total_net_output_bytes)


def build(work: Path, quick: bool, address: str) -> tuple[Path, Path]:
    """A private repo with one data set, applied (SQL registry on SQLite) and materialised into
    the private redis-server at `address`."""
    repo = synthetic_repo(work, *((400, 800) if quick else (1000, 2000)))
    fs_yaml = repo / "feature_store.production.yaml"
    fs_yaml.write_text(fs_yaml.read_text().replace("${FEAST_REDIS_CONNECTION}", address))
    feature_repo.apply(repo, fs_yaml)
    feature_repo.materialize(repo, fs_yaml=fs_yaml, full=True)
    return repo, fs_yaml


def cpu_seconds(client: redis.Redis) -> float:
    info: dict[str, Any] = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def hmget_stats(client: redis.Redis) -> tuple[int, int]:
    stats: dict[str, Any] = client.info("commandstats")
    row = stats.get("cmdstat_hmget", {})
    return int(row.get("calls", 0)), int(row.get("usec", 0))


def idle_rate(client: redis.Redis, seconds: float) -> float:
    """The server's own CPU a second with no requests (serverCron and the like)."""
    before = cpu_seconds(client)
    time.sleep(seconds)
    return (cpu_seconds(client) - before) / seconds


def out_bytes(client: redis.Redis) -> int:
    return int(client.info("stats")["total_net_output_bytes"])


def timed_block(
    client: redis.Redis, idle: float, send: Any, requests: int
) -> tuple[float, float, float, float]:
    """CPU us a request (idle subtracted), HMGET calls, their usec and the bytes sent a
    request, over `requests` sequential calls of `send(requests)`."""
    client.config_resetstat()
    sent0 = out_bytes(client)
    cpu0 = cpu_seconds(client)
    t0 = time.perf_counter()
    send(requests)
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(client) - cpu0 - idle * wall
    calls, usec = hmget_stats(client)
    sent = out_bytes(client) - sent0
    return cpu / requests * 1e6, calls / requests, usec / requests, sent / requests


def redis_costs(
    repo: Path, fs_yaml: Path, client: redis.Redis, quick: bool, config: str
) -> tuple[list[RedisCost], float, np.ndarray]:
    """Redis CPU a request for every N and cache mode, the PING baseline first; also the idle
    CPU rate and an assembled matrix of real rows (for the model)."""
    scale = 0.25 if quick else 1.0
    counts = {10: int(2000 * scale), 100: int(800 * scale), 500: int(240 * scale)}
    idle = idle_rate(client, 2.0 if quick else 5.0)
    rows: list[RedisCost] = []

    def pings(k: int) -> None:
        for _ in range(k):
            client.ping()

    ping_n = int(2000 * scale)
    cpu, _, _, sent = timed_block(client, idle, pings, ping_n)
    rows.append(
        RedisCost(config, "baseline: 1 PING a request", 0, "-", ping_n, cpu, 0.0, 0.0, sent)
    )
    items = [f"i_{i:06d}" for i in range(800 if quick else 2000)]
    users = [f"u_{u:06d}" for u in range(400 if quick else 1000)]
    matrices: list[np.ndarray] = []
    loop = asyncio.new_event_loop()
    try:
        for cache in ("off", "warm"):
            source = RedisFeatureSource(
                repo, fs_yaml, cache_rows=0 if cache == "off" else 1_000_000, cache_ttl_s=3600.0
            )
            contract = source.contract(TARGET.feature_service)
            for view in source.layout(source.catalog.plan(contract)):
                kind = "user" if view.entity == USER_ENTITY else "candidate"
                FIELDS[kind] = FIELDS.get(kind, 0) + len(view.fields) * (cache == "off")
            rng = random.Random(7)

            def request(n: int, ids: tuple[str, ...] | None = None) -> FeatureRequest:
                chosen = ids if ids is not None else tuple(rng.sample(items, n))
                return FeatureRequest(
                    contract, TARGET, rng.choice(users), chosen, {"request_ts": int(time.time())}
                )

            if cache == "warm":  # every item cached: the reads below fetch the user's hash only
                for start in range(0, len(items), 500):
                    chunk = tuple(items[start : start + 500])
                    loop.run_until_complete(source.read(request(len(chunk), chunk)))
            for n in SIZES:
                for _ in range(10):  # connections, read plan
                    online = loop.run_until_complete(source.read(request(n)))
                    if cache == "off" and n == 100:
                        matrices.append(contract.assemble(online.columns).matrix)

                def reads(k: int, n: int = n) -> None:
                    for _ in range(k):
                        loop.run_until_complete(source.read(request(n)))

                k = max(counts[n], 20)
                with console.status(f"Redis CPU, {config}: N = {n}, cache {cache}, {k} reads"):
                    cpu, calls, usec, sent = timed_block(client, idle, reads, k)
                rows.append(RedisCost(config, "gateway read", n, cache, k, cpu, calls, usec, sent))
            loop.run_until_complete(source.aclose())
    finally:
        loop.close()
    return rows, idle, np.concatenate(matrices)


@dataclass(frozen=True, slots=True)
class KeyMemory:
    config: str
    entity: str
    keys: int
    mean_bytes: float
    max_bytes: int
    fields: float  # mean hash fields a key
    encoding: str


def redis_memory(
    client: redis.Redis, empty_used: int, config: str
) -> tuple[list[KeyMemory], dict[str, Any]]:
    """MEMORY USAGE of every key by entity (the join key's name is in Feast's key), and the
    server's memory figures."""
    by: dict[str, list[tuple[int, int, str]]] = {}
    for key in client.scan_iter(count=1000):
        entity = next((j.removesuffix("_id") for j in JOIN_KEYS if j.encode() in key), "other")
        usage = int(client.memory_usage(key, samples=0) or 0)
        fields = int(client.hlen(key)) if client.type(key) == b"hash" else 0
        encoding = client.object("encoding", key)
        name = encoding.decode() if isinstance(encoding, bytes) else str(encoding)
        by.setdefault(entity, []).append((usage, fields, name))
    rows = []
    for entity, found in sorted(by.items(), key=lambda kv: -len(kv[1])):
        usages = np.array([u for u, _, _ in found])
        encodings = sorted({e for _, _, e in found})
        rows.append(
            KeyMemory(
                config,
                entity,
                len(found),
                float(usages.mean()),
                int(usages.max()),
                float(np.mean([f for _, f, _ in found])),
                "/".join(encodings),
            )
        )
    info: dict[str, Any] = client.info("memory")
    keys = int(client.dbsize())
    summary = {
        "config": config,
        "keys": keys,
        "used_memory": int(info["used_memory"]),
        "empty_used_memory": empty_used,
        "per_key": (int(info["used_memory"]) - empty_used) / max(keys, 1),
        "fragmentation": float(info.get("mem_fragmentation_ratio", 0.0)),
    }
    return rows, summary


def model_costs(
    contract_x: np.ndarray, source_repo: Path, fs_yaml: Path, work: Path, quick: bool
) -> tuple[list[Any], int, int]:
    """CPU latency of an item_ranker DCN by batch size; its width and multiply-adds a row."""
    source = RedisFeatureSource(source_repo, fs_yaml, cache_rows=0)
    contract = source.contract(TARGET.feature_service)
    x = np.ascontiguousarray(contract_x, dtype=np.float32)
    columns = column_layout(contract, x.shape[1])
    prep = fit_preprocessing(x, columns, feature_groups(contract))
    torch.manual_seed(0)
    model = build_model(prep, ModelConfig(), 2)  # click + purchase, as item_ranker trains
    model.set_reference(torch.from_numpy(x))
    artifact, _ = export_torchscript(model, torch.from_numpy(x[:500]))
    path = work / "model.pt"
    path.write_bytes(artifact)
    macs = sum(
        m.in_features * m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)
    )
    with console.status("model latency on the CPU"):
        rows = model_latency(path, x.shape[1], ["cpu"], BATCHES, repeats=50 if quick else 200)
    return rows, x.shape[1], macs


def md_rows(path: Path, header_start: str) -> list[list[str]]:
    """The cells of the Markdown table in `path` whose header line starts with
    `header_start` (empty when the file or table is missing)."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    out: list[list[str]] = []
    inside = False
    for line in lines:
        if line.startswith(header_start):
            inside, out = True, []
            continue
        if inside:
            if not line.startswith("|"):
                inside = False
                continue
            if set(line.replace("|", "").strip()) <= set("-: "):
                continue
            out.append([c.strip() for c in line.strip().strip("|").split("|")])
    return out


def number(text: str) -> float:
    found = re.search(r"[\d,]*\.?\d+", text)
    return float(found.group().replace(",", "")) if found else math.nan


def gateway_cpu() -> dict[tuple[int, str], float]:
    """Gateway CPU ms a request by (N, cache) from bench/RESULTS.md's stages table."""
    out: dict[tuple[int, str], float] = {}
    for cells in md_rows(BENCH / "RESULTS.md", "| N | features | assembly |"):
        out[(int(cells[0]), "warm")] = number(cells[4])
        out[(int(cells[0]), "cold")] = number(cells[5])
    return out


def triton_cpu() -> dict[int, float]:
    """Triton's CPU ms a request (CPU inference, 1 gateway worker) from bench/WORKERS.md."""
    out: dict[int, float] = {}
    for cells in md_rows(BENCH / "WORKERS.md", "| N | workers |"):
        if cells[1] == "1":
            out[int(cells[0])] = number(cells[6]) / number(cells[2]) * 1000
    return out


def build_rate() -> tuple[dict[str, float], str]:
    """Feature build events per CPU-second by engine (largest size that finished)."""
    rates: dict[str, float] = {}
    engines = BENCH / "BUILD_ENGINES.md"
    if engines.exists():
        for cells in md_rows(engines, "| events | engine |"):
            if cells[-1] == "ok":
                rates[cells[1]] = number(cells[0]) / number(cells[3])
        if rates:
            return rates, "bench/BUILD_ENGINES.md (largest finished size an engine)"
    for cells in md_rows(BENCH / "SHOP_SCALE.md", "| step | events |"):
        if cells[0] == "import" and cells[-1] == "ok":
            rates["pandas"] = number(cells[1]) / number(cells[3])
    return rates, "bench/SHOP_SCALE.md (pandas import, largest size); Spark: pending"


def gpu_ms(n: int, macs: int) -> float:
    """Assumed GPU time of one batch of n rows (see the constants)."""
    return max(GPU_BATCH_FLOOR_MS, n * 2 * macs / (GPU_PEAK_FLOPS * GPU_EFFICIENCY) * 1000)


def triton_front_ms(triton: dict[int, float], latency: list[Any], n: int) -> tuple[float, str]:
    """Triton's CPU a request besides the model call (what stays on the host's CPU when the
    model runs on a GPU): its measured CPU less the model's CPU p50 at that batch; linear in N
    between and beyond the measured sizes."""
    model = {r.batch: r.compute_p50_ms for r in latency}
    front = {k: v - model[k] for k, v in triton.items() if k in model}
    if n in front:
        return front[n], "measured"
    if len(front) < 2:
        return math.nan, "missing"
    (n0, f0), (n1, f1) = sorted(front.items())[:2]
    return f0 + (f1 - f0) * (n - n0) / (n1 - n0), f"extrapolated from N = {n0}, {n1}"


def sizing(
    redis_rows: list[RedisCost],
    memory: list[KeyMemory],
    gw: dict[tuple[int, str], float],
    triton: dict[int, float],
    rates: dict[str, float],
    latency: list[Any],
    macs: int,
) -> list[list[str]]:
    """The sizing table's rows: tier, N, case, the arithmetic, the count."""
    out: list[list[str]] = []
    events = USERS * EVENTS_PER_USER_YEAR
    for engine, rate in sorted(rates.items()):
        cores = events / rate / (BUILD_WINDOW_H * 3600) / UTILISATION
        executors = math.ceil(cores / EXECUTOR_CORES)
        out.append(
            [
                "Spark executors",
                "-",
                f"{engine} events/core-s",
                f"{events:.1e} events / {rate:,.0f} events per core-s / {BUILD_WINDOW_H:.0f} h"
                f" / {UTILISATION:.0%} = {cores:.0f} cores",
                f"{executors} x {EXECUTOR_CORES} cores",
            ]
        )
    for config in CONFIGS.values():
        per = {m.entity: m.mean_bytes for m in memory if m.config == config}
        data = USERS * per.get("user", 0) + ITEMS * per.get("item", 0)
        data += ACTIVITIES * max(per.get("activity", 0), per.get("bundle", 0))
        gib = data * FRAGMENTATION / 2**30
        node = REDIS_NODE_GIB * REDIS_MAXMEMORY
        by_memory = math.ceil(gib / node)
        cost = {(r.n, r.cache): r.cpu_us for r in redis_rows if r.n and r.config == config}
        for n in (N_TYPICAL, 500):
            for cache in ("off", "warm"):
                us = cost.get((n, cache), math.nan)
                by_cpu = math.ceil(RPS * us / 1e6 / UTILISATION)
                masters = max(by_memory, by_cpu, REDIS_MIN_MASTERS)
                out.append(
                    [
                        "Redis nodes",
                        str(n),
                        f"{config}, cache {cache}",
                        f"memory {gib:.0f} GiB / {node:.0f} GiB = {by_memory}; CPU {RPS} x "
                        f"{us:,.0f} us / {UTILISATION:.0%} = {by_cpu} main threads; min "
                        f"{REDIS_MIN_MASTERS}",
                        f"{masters} masters + {masters * REPLICAS} replicas",
                    ]
                )
    sent = {(r.n, r.cache): r.out_bytes for r in redis_rows if r.n}  # the same in both configs
    for n in (N_TYPICAL, 500):
        for cache in ("off", "warm"):
            gbit = RPS * sent.get((n, cache), math.nan) * 8 / 1e9
            out.append(
                [
                    "Redis network out",
                    str(n),
                    f"cache {cache}",
                    f"{RPS} x {sent.get((n, cache), math.nan) / 1024:.0f} KiB x 8",
                    f"{gbit:.2f} Gbit/s over all masters",
                ]
            )
    for n in (N_TYPICAL, 500):
        for cache in ("warm", "cold"):
            ms = gw.get((n, cache), math.nan)
            cores = RPS * ms / 1000 / UTILISATION
            hosts = math.ceil(cores / GATEWAY_HOST_CORES)
            out.append(
                [
                    "gateway",
                    str(n),
                    f"cache {cache}",
                    f"{RPS} x {ms:.1f} ms / {UTILISATION:.0%} = {cores:.0f} cores",
                    f"{math.ceil(cores)} workers ({max(hosts, 2)} hosts of {GATEWAY_HOST_CORES})",
                ]
            )
    model = {r.batch: r.compute_p50_ms for r in latency}
    for n in (N_TYPICAL, 500):
        busy = RPS * gpu_ms(n, macs) / 1000
        gpus = max(math.ceil(busy / UTILISATION), GPUS_MIN)
        front, how = triton_front_ms(triton, latency, n)
        front_cores = math.ceil(RPS * front / 1000 / UTILISATION)
        out.append(
            [
                "Triton GPUs (estimate)",
                str(n),
                "GPU time assumed",
                f"{RPS} x {gpu_ms(n, macs):.2f} ms a batch, unbatched = {busy:.1f} GPU-s a "
                f"second / {UTILISATION:.0%}; min {GPUS_MIN}; host CPU {RPS} x {front:.1f} ms "
                f"({how}) / {UTILISATION:.0%}",
                f"{gpus} GPUs, {front_cores} host cores",
            ]
        )
        cpu_ms = front + model.get(n, math.nan)
        out.append(
            [
                "Triton on CPUs instead",
                str(n),
                "measured",
                f"{RPS} x ({front:.1f} + model {model.get(n, math.nan):.1f}) ms / "
                f"{UTILISATION:.0%}",
                f"{math.ceil(RPS * cpu_ms / 1000 / UTILISATION)} cores",
            ]
        )
    return out


def run(quick: bool) -> None:
    work = Path(tempfile.mkdtemp(prefix="scoring-sizing-bench-"))
    started = datetime.now(UTC)
    load_start = os.getloadavg()[0]
    memory: list[KeyMemory] = []
    summaries: list[dict[str, Any]] = []
    redis_rows: list[RedisCost] = []
    idles: dict[str, float] = {}
    x = np.zeros((0, 0), dtype=np.float32)
    try:
        with TunableRedis(work / "redis") as server:
            client = redis.Redis(host="127.0.0.1", port=server.port)
            empty = int(client.info("memory")["used_memory"])
            with console.status("data, feast apply, materialise into a private Redis"):
                repo, fs_yaml = build(work, quick, server.address)
            for i, (entries, config) in enumerate(CONFIGS.items()):
                if i:  # the same data, reloaded from the RDB file under another encoding limit
                    client.close()
                    server.stop()
                    server.listpack_entries = entries
                    server.start()
                    server.wait_ready()
                    client = redis.Redis(host="127.0.0.1", port=server.port)
                found, summary = redis_memory(client, empty, config)
                memory += found
                summaries.append(summary)
                rows, idles[config], matrix = redis_costs(repo, fs_yaml, client, quick, config)
                redis_rows += rows
                if not i:
                    x = matrix
            client.close()
            latency, width, macs = model_costs(x, repo, fs_yaml, work, quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    gw, triton = gateway_cpu(), triton_cpu()
    rates, rate_source = build_rate()
    plan = sizing(redis_rows, memory, gw, triton, rates, latency, macs)
    report(
        started, quick, (load_start, os.getloadavg()[0]), redis_rows, idles, memory, summaries,
        latency, width, macs, gw, triton, rates, rate_source, plan,
    )  # fmt: skip


def table(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """Prints a rich table and returns its Markdown lines."""
    shown = Table(title=title)
    for col in header:
        shown.add_column(col, justify="right")
    for r in rows:
        shown.add_row(*r)
    console.print(shown)
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
    ]


def report(
    started: datetime,
    quick: bool,
    load: tuple[float, float],
    redis_rows: list[RedisCost],
    idles: dict[str, float],
    memory: list[KeyMemory],
    summaries: list[dict[str, Any]],
    latency: list[Any],
    width: int,
    macs: int,
    gw: dict[tuple[int, str], float],
    triton: dict[int, float],
    rates: dict[str, float],
    rate_source: str,
    plan: list[list[str]],
) -> None:
    command = ".venv/bin/python bench/sizing_bench.py" + (" --quick" if quick else "")
    lines = [
        "# Sizing measurements",
        "",
        f"`{command}` on {platform.node()} ({os.cpu_count()} CPUs, no GPU), "
        f"{started:%Y-%m-%d %H:%M} UTC; load average (1 min) at the start and the end "
        f"{load[0]:.2f} / {load[1]:.2f} (a machine shared with other work: CPU time per request "
        "moves less with load than latency does, but cache and frequency effects still raise "
        "it). The sizing that uses these figures: docs/sizing.md.",
        "",
        "## Redis: server CPU a Rank request's feature read",
        "",
        "A private redis-server on loopback, the repo's feature views materialised into it; the "
        "gateway's own read (`RedisFeatureSource.read`: one pipelined write of one HMGET per "
        "entity key) for 1 user x N random candidates, sequential. CPU: the server's "
        "used_cpu_user + used_cpu_sys over the block, less its idle CPU over the same wall "
        "time (measured first: "
        + ", ".join(f"{v * 1000:.2f} ms a second ({k})" for k, v in idles.items())
        + "); HMGET: INFO commandstats "
        "(execution only, without reading and writing the sockets). Cache off: every "
        "candidate's hash read; warm: every item cached in the reader first, only the user's "
        f"hash read. The user's HMGET asks for {FIELDS.get('user', 0) // len(CONFIGS)} fields, "
        f"a candidate's for {FIELDS.get('candidate', 0) // len(CONFIGS)} (the item_ranker "
        "read plan). Baseline: one PING a request. Each row twice: the same data under Redis's "
        "default hash encoding limits (a user's hash, a few hundred small fields, is one "
        "listpack that HMGET scans for each field) and restarted with "
        "hash-max-listpack-entries 128 (every hash above 128 fields a hash table).",
        "",
    ]
    lines += table(
        "Redis server CPU a request",
        [
            "Redis config",
            "read",
            "N",
            "cache",
            "requests",
            "CPU us / request",
            "HMGETs / request",
            "HMGET usec / request",
            "requests/s a core at 100%",
            "KiB sent / request",
        ],  # fmt: skip
        [
            [
                r.config,
                r.label,
                str(r.n or "-"),
                r.cache,
                str(r.requests),
                f"{r.cpu_us:.1f}",
                f"{r.hmget_calls:.1f}",
                f"{r.hmget_us:.1f}",
                f"{1e6 / r.cpu_us:,.0f}",
                f"{r.out_bytes / 1024:.1f}",
            ]
            for r in redis_rows
        ],
    )
    lines += [
        "## Redis: memory a key",
        "",
        "MEMORY USAGE (SAMPLES 0) of every key, by the entity in Feast's key; and the server's "
        "used_memory growth over its key count (mem_fragmentation_ratio on this small, fresh "
        "data set says little about a large one):",
        "",
        *(
            f"- {m['config']}: {m['keys']:,} keys, used_memory {m['used_memory'] / 2**20:.1f} "
            f"MiB ({m['empty_used_memory'] / 2**20:.1f} MiB empty), {m['per_key']:,.0f} bytes "
            f"a key, mem_fragmentation_ratio {m['fragmentation']:.2f}"
            for m in summaries
        ),
        "",
    ]
    lines += table(
        "Redis memory a key",
        ["Redis config", "entity", "keys", "mean bytes", "max bytes", "fields a hash", "encoding"],
        [
            [
                m.config,
                m.entity,
                f"{m.keys:,}",
                f"{m.mean_bytes:,.0f}",
                f"{m.max_bytes:,}",
                f"{m.fields:.0f}",
                m.encoding,
            ]
            for m in memory
        ],
    )
    lines += [
        "## Model: CPU latency by batch size",
        "",
        f"An item_ranker DCN-v2 (ModelConfig defaults, click + purchase heads) of the real "
        f"input width ({width} columns, fitted on rows read from the store, untrained: its "
        f"time does not depend on the weights), TorchScript, 1 intra-op thread as served; "
        f"{macs:,} multiply-adds a row in its linear layers "
        "(scoring.trainer.latency.measure, as `scoring model-latency`).",
        "",
    ]
    lines += table(
        "model latency on the CPU, ms",
        ["batch", "p50", "p99", "rows/s (p50)"],
        [
            [
                str(r.batch),
                f"{r.compute_p50_ms:.3f}",
                f"{r.compute_p99_ms:.3f}",
                f"{r.rows_per_s:,.0f}",
            ]  # fmt: skip
            for r in latency
        ],
    )
    lines += [
        "## Read from the other benches",
        "",
        "Gateway CPU a request (ms, every thread of the serving process), bench/RESULTS.md's "
        "stages table (its run and load are in that file); Triton CPU a request (ms, CPU "
        "inference, python backend), bench/WORKERS.md (Triton's busy cores / requests a "
        f"second, 1 gateway worker); feature build events per CPU-second: {rate_source}.",
        "",
    ]
    gw_rows = [
        [
            str(n),
            f"{gw.get((n, 'warm'), math.nan):.2f}",
            f"{gw.get((n, 'cold'), math.nan):.2f}",
            f"{triton[n]:.2f}" if n in triton else "-",
        ]  # fmt: skip
        for n in sorted({n for n, _ in gw})
    ]
    lines += table(
        "gateway and Triton CPU a request, ms",
        ["N", "gateway, warm", "gateway, cold", "Triton (CPU inference)"],
        gw_rows,
    )
    lines += table(
        "feature build",
        ["engine", "events / CPU-second"],
        [[e, f"{r:,.0f}"] for e, r in sorted(rates.items())],
    )
    lines += [
        "## Sizing",
        "",
        f"{USERS:,} users, {ITEMS:,} items, {ACTIVITIES:,} activities (assumed), {RPS:,} "
        f"requests/s, CPU at {UTILISATION:.0%} target utilisation; {EVENTS_PER_USER_YEAR} "
        f"events a user a year rebuilt daily in {BUILD_WINDOW_H:.0f} h; Redis nodes of "
        f"{REDIS_NODE_GIB} GiB, {REDIS_MAXMEMORY:.0%} of it for data, fragmentation x"
        f"{FRAGMENTATION}; GPU: {GPU_EFFICIENCY:.0%} of an H100's {GPU_PEAK_FLOPS / 1e12:.0f} "
        f"TFLOPS FP32 and a {GPU_BATCH_FLOOR_MS} ms floor a batch (assumed, not measured). "
        "docs/sizing.md explains each.",
        "",
    ]
    lines += table("sizing", ["tier", "N", "case", "arithmetic", "count"], plan)
    (BENCH / "SIZING.md").write_text("\n".join(lines))
    console.print("wrote bench/SIZING.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smaller data set, fewer reads")
    run(parser.parse_args().quick)


if __name__ == "__main__":
    main()
