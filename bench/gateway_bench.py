"""Gateway benchmark: the serving path against the naive pipeline and the floor, in one run.

On the production profile (Redis online store, SQL registry on PostgreSQL, real Triton):
1 user x N candidates, N in 10/100/500/1000, the same requests for every path:

- gateway: the real gRPC gateway (direct Redis read, cache, assembly, Triton), end to end;
- stages: the gateway's own pieces timed in this process (features, assembly, inference);
- naive: Feast SDK `get_online_features` + `to_df` + assembly + a synchronous Triton call;
- floor: one pipelined raw HMGET of the same keys (bytes, no decode) + Triton on a ready tensor.

Prints a table, checks the targets (gateway p99 <= 0.5x naive and <= 1.5x floor) and writes
bench/RESULTS.md. Run: `make bench` (or `.venv/bin/python bench/gateway_bench.py --quick`).
Needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432; uses a unique Feast project
and drops it afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import os
import platform
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rich.console import Console
from rich.table import Table

from scoring import workflows
from scoring.client import RankingClient
from scoring.core import feature_repo
from scoring.core.model_io import FEATURES_INPUT, SCORE_OUTPUT
from scoring.core.settings import FeastSettings
from scoring.core.targets import TARGETS, CandidateKind
from scoring.datagen.dataset import build_data_set
from scoring.datagen.synthetic import SyntheticConfig, generate
from scoring.devtools.local_stack import gateway_settings, triton_settings
from scoring.gateway.feature_source import FeastFeatureSource, FeatureRequest
from scoring.gateway.process import GatewayProcess
from scoring.gateway.redis_source import RedisFeatureSource
from scoring.trainer.train import TrainConfig
from scoring.triton.server import TritonServer

ROOT = Path(__file__).resolve().parents[1]
REDIS = "127.0.0.1:6379"
REGISTRY = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
SIZES = (10, 100, 500, 1000)
CONCURRENCY = (1, 8, 32)
console = Console(width=140)


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(np.array(samples) * 1000, q))


def interleaved(
    paths: dict[str, tuple[Callable[[], Any], int]], rounds: int
) -> dict[str, list[float]]:
    """Latency samples of each path, `count` requests each, in `rounds` alternating blocks
    (the order rotating each round): on a shared machine whose speed drifts, every path sees
    the same conditions, so the ratios between them are fair."""
    for fn, _ in paths.values():
        fn()  # warm
    names = list(paths)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, count = paths[name]
            block = count // rounds + (1 if r < count % rounds else 0)
            for _ in range(block):
                started = time.perf_counter()
                fn()
                out[name].append(time.perf_counter() - started)
    return out


def p99_ratio_interval(
    numerator: list[float], denominator: list[float], resamples: int = 2000
) -> tuple[float, float]:
    """A 95% bootstrap interval of p99(numerator) / p99(denominator): how far the ratio moves
    with the draw of requests alone (p99 of 1000 samples is about the 10th slowest)."""
    rng = np.random.default_rng(0)
    num, den = np.asarray(numerator), np.asarray(denominator)
    p_num = np.percentile(num[rng.integers(0, len(num), (resamples, len(num)))], 99, axis=1)
    p_den = np.percentile(den[rng.integers(0, len(den), (resamples, len(den)))], 99, axis=1)
    low, high = np.percentile(p_num / p_den, [2.5, 97.5])
    return float(low), float(high)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, {platform.platform()}, no GPU"


class Stack:
    """Feature repo on Redis + PostgreSQL, trained models, Triton and the gateway.

    Args:
        gateway: GatewaySettings fields that replace this benchmark's (bench/soak.py logs what
            it serves, with the default deadlines).
    """

    def __init__(self, work: Path, n_items: int, n_users: int, **gateway: Any) -> None:
        self.work = work
        self.overrides = gateway
        self.project = f"scoring_bench_{uuid.uuid4().hex[:8]}"
        os.environ["FEAST_REDIS_CONNECTION"] = REDIS
        os.environ["FEAST_REGISTRY_PATH"] = REGISTRY
        self.repo = work / "features"
        shutil.copytree(
            ROOT / "features", self.repo, ignore=shutil.ignore_patterns("data", "__pycache__")
        )
        self.fs_yaml = self.repo / "feature_store.production.yaml"
        text = self.fs_yaml.read_text().replace(
            "\nproject: scoring\n", f"\nproject: {self.project}\n"
        )
        self.fs_yaml.write_text(text)
        self.n_items, self.n_users = n_items, n_users
        self.triton: TritonServer | None = None
        self.gateway: GatewayProcess | None = None

    def build(self) -> None:
        end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        cfg = SyntheticConfig(
            self.n_users, self.n_items, 60, 8 * self.n_users, 2 * self.n_users, days=14,
            organic_per_user=8, end=end,
        )  # fmt: skip
        with console.status("data, feast apply, materialize into Redis"):
            cache = ROOT / ".bench" / "text_cache.parquet"
            cache.parent.mkdir(exist_ok=True)
            build_data_set(generate(cfg), self.repo / "data", text_cache=cache)
            feature_repo.apply(self.repo, self.fs_yaml)
            feature_repo.materialize(self.repo, fs_yaml=self.fs_yaml)
        self.models = self.work / "model_repository"
        triton_cfg = triton_settings(self.models, self.work / "triton")
        # A private registry under the work folder: the models trained below are registered
        # there, and served as Triton loaded them (none is promoted).
        self.settings = gateway_settings(
            FeastSettings(repo_path=self.repo, fs_yaml=self.fs_yaml), triton_cfg, self.work,
            **{"feature_log_sample_rate": 0.0, "default_timeout_ms": 10_000,
               "feature_timeout_ms": 10_000, "feature_read": "redis", **self.overrides},
        )  # fmt: skip
        self.settings.log_json = True  # as deployed (docker-compose, k8s): one JSON line a request
        with console.status("training (1 epoch: latency, not quality)"):
            # Every target: the gateway serves when every target is ready.
            workflows.train_and_register(self.settings, None, TrainConfig(epochs=1), actor="bench")
        with console.status("starting Triton and the gateway"):
            self.triton = TritonServer(triton_cfg, list(TARGETS))
            self.triton.start()
            self.triton.wait_ready()
            self.gateway = GatewayProcess(self.settings, log_path=self.work / "gateway.log")
            self.gateway.start()
            self.gateway.wait_ready(120)

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.stop()
        if self.triton is not None:
            self.triton.stop()
        try:
            feature_repo.drop_project(feature_repo.open_store(self.repo, self.fs_yaml))
        except Exception as exc:  # noqa: BLE001
            console.print(f"[yellow]could not drop bench project {self.project}: {exc}")


def run(quick: bool) -> int:
    work = Path(tempfile.mkdtemp(prefix="scoring-bench-"))
    stack = Stack(work, n_items=1500 if not quick else 1100, n_users=2000 if not quick else 600)
    rows: list[dict[str, Any]] = []
    throughput: list[dict[str, Any]] = []
    try:
        stack.build()
        # This process measures every path: keep its start-up heap (Feast, pandas, torch) out
        # of the garbage collector's full scans, as the gateway does (GatewaySettings.gc_freeze),
        # so that a collection's pause lands on none of the paths.
        gc.collect()
        gc.freeze()
        assert stack.gateway is not None and stack.triton is not None
        target = TARGETS["item_ranker"]
        sdk = FeastFeatureSource(stack.repo, stack.fs_yaml)
        fast = RedisFeatureSource(stack.repo, stack.fs_yaml, cache_rows=0)  # uncached stages
        contract = sdk.contract(target.feature_service)
        triton = grpcclient.InferenceServerClient(stack.triton.settings.url)
        client = RankingClient(stack.gateway.address)
        health = health_pb2_grpc.HealthStub(client.channel)
        redis_client = fast.client
        # The stage timings read features as the gateway does (awaited), on one loop.
        stage_loop = asyncio.new_event_loop()
        assert stack.gateway.process is not None
        gateway_process = psutil.Process(stack.gateway.process.pid)
        rng = np.random.default_rng(0)
        items = [f"i_{i:06d}" for i in range(stack.n_items)]
        users = [f"u_{i:06d}" for i in range(stack.n_users)]
        now = int(time.time())

        def infer(matrix: np.ndarray) -> np.ndarray:
            inp = grpcclient.InferInput(FEATURES_INPUT, list(matrix.shape), "FP32")
            inp.set_data_from_numpy(matrix)
            out = triton.infer(
                "item_ranker", [inp], outputs=[grpcclient.InferRequestedOutput(SCORE_OUTPUT)]
            )
            return np.asarray(out.as_numpy(SCORE_OUTPUT))

        for n in SIZES:
            # Enough requests that p99 is a percentile, not the slowest one: 1000 a path up to
            # N = 100 (10 samples above the p99), 300 above; the naive path 300, and 100 above
            # N = 100 (it takes 0.2-0.6 s a request).
            repeats = 12 if quick else (1000 if n <= 100 else 300)
            naive_repeats = 12 if quick else (300 if n <= 100 else 100)
            requests = [
                (users[int(rng.integers(len(users)))], tuple(rng.choice(items, n, replace=False)))
                for _ in range(repeats + 1)
            ]
            # Each path walks the same list of requests from its start, at its own pace.
            cursors = {p: itertools.count() for p in ("gateway", "naive", "floor", "stages")}

            def next_request(path: str) -> tuple[str, tuple[str, ...]]:
                return requests[next(cursors[path]) % len(requests)]

            def hop_call() -> None:
                # The gateway's gRPC hop alone (health Check, same channel): no path that is a
                # network service can answer faster; the floor does not pay it.
                health.Check(health_pb2.HealthCheckRequest(service=""), timeout=30)

            def gateway_call() -> None:
                user, ids = next_request("gateway")
                client.rank(
                    user,
                    ids,
                    CandidateKind.ITEM,
                    timestamp_s=now,
                    keep_unavailable=True,
                    timeout_s=30,
                )

            ready = contract.assemble(
                sdk.read_blocking(
                    FeatureRequest(contract, target, *requests[0], {"request_ts": now})
                ).columns
            ).matrix

            def naive_call() -> None:
                user, ids = next_request("naive")
                rows_ = [{"user_id": user, "item_id": c, "request_ts": now} for c in ids]
                frame = sdk.store.get_online_features(
                    features=sdk.store.get_feature_service(contract.service),
                    entity_rows=rows_, full_feature_names=True,
                ).to_df()  # fmt: skip
                infer(contract.assemble(frame).matrix)

            plan = fast.layout(fast.catalog.plan(contract))

            def floor_call() -> None:
                user, ids = next_request("floor")
                pipe = redis_client.pipeline(transaction=False)
                for view in plan:
                    if view.entity == "user":
                        pipe.hmget(fast.entity_key("user_id", user), list(view.fields))
                    else:
                        for c in ids:
                            pipe.hmget(fast.entity_key("item_id", c), list(view.fields))
                pipe.execute()
                infer(ready)

            stage_features: list[float] = []
            stage_assembly: list[float] = []
            stage_inference: list[float] = []

            def stages_call() -> None:
                user, ids = next_request("stages")
                t0 = time.perf_counter()
                read = fast.read(FeatureRequest(contract, target, user, ids, {"request_ts": now}))
                online = stage_loop.run_until_complete(read)
                t1 = time.perf_counter()
                matrix = contract.assemble(online.columns).matrix
                t2 = time.perf_counter()
                infer(matrix)
                t3 = time.perf_counter()
                stage_features.append(t1 - t0)
                stage_assembly.append(t2 - t1)
                stage_inference.append(t3 - t2)

            with console.status(f"N={n}: gateway, naive, floor, hop, stages (interleaved)"):
                results = interleaved(
                    {
                        "gateway": (gateway_call, repeats),
                        "naive": (naive_call, naive_repeats),
                        "floor": (floor_call, repeats),
                        "hop": (hop_call, repeats),
                        "stages": (stages_call, repeats),
                    },
                    rounds=2 if quick else 10,
                )
                del results["stages"]  # timed stage by stage, below
            row: dict[str, Any] = {"n": n}
            # What the gateway process spends a request (every thread, user + system): a
            # figure that machine-speed drift moves less than latency does.
            cpu_repeats = 12 if quick else 300
            spent = sum(gateway_process.cpu_times()[:2])
            for _ in range(cpu_repeats):
                gateway_call()
            row["gateway_cpu_ms"] = (
                (sum(gateway_process.cpu_times()[:2]) - spent) / cpu_repeats * 1000
            )
            row["floor_ratio_ci"] = p99_ratio_interval(results["gateway"], results["floor"])
            for name, samples in results.items():
                for q in (50, 90, 99):
                    row[f"{name}_p{q}"] = pct(samples, q)
            for name, samples in (
                ("features", stage_features[-repeats:]),
                ("assembly", stage_assembly[-repeats:]),
                ("inference", stage_inference[-repeats:]),
            ):
                for q in (50, 90, 99):
                    row[f"{name}_p{q}"] = pct(samples, q)
            rows.append(row)

            # Closed-loop throughput of each path at each concurrency, the floor included: how
            # much of what the machine can serve the gateway keeps.
            for concurrency in CONCURRENCY:
                duration = 2.0 if quick else 3.0
                paths = (("gateway", gateway_call), ("floor", floor_call), ("naive", naive_call))
                for name, fn in paths:
                    done = [0]
                    lock = threading.Lock()
                    stop_at = time.monotonic() + duration
                    errors = [0]

                    def worker(fn: Callable[[], None] = fn) -> None:
                        # One shared gRPC channel: HTTP/2 multiplexes the callers' requests.
                        while time.monotonic() < stop_at:
                            try:
                                fn()
                                with lock:
                                    done[0] += 1
                            except Exception:  # noqa: BLE001
                                with lock:
                                    errors[0] += 1

                    if name == "naive" and concurrency > 8:
                        continue  # the SDK path saturates long before; keeps the run short
                    with console.status(
                        f"N={n}: throughput of {name} at concurrency {concurrency}"
                    ):
                        threads = [threading.Thread(target=worker) for _ in range(concurrency)]
                        started = time.monotonic()
                        for t in threads:
                            t.start()
                        for t in threads:
                            t.join()
                        elapsed = time.monotonic() - started
                    throughput.append(
                        {"n": n, "path": name, "concurrency": concurrency,
                         "rps": done[0] / elapsed, "errors": errors[0]}
                    )  # fmt: skip
        client.close()
        triton.close()
        stage_loop.run_until_complete(fast.aclose())
        stage_loop.close()
    finally:
        stack.close()
        shutil.rmtree(work, ignore_errors=True)
    return report(rows, throughput, quick)


def report(rows: list[dict[str, Any]], throughput: list[dict[str, Any]], quick: bool) -> int:
    table = Table(title="1 user x N candidates, latency in ms (p50 / p90 / p99)")
    for col in ("N", "gateway", "naive (Feast SDK)", "floor (raw Redis + infer)",
                "gRPC hop", "gw/naive p99", "gw/floor p99 (95% CI)", "target"):  # fmt: skip
        table.add_column(col, justify="right")
    lines = [
        "# Gateway benchmark",
        "",
        f"Machine: {machine()}. Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        + (" (--quick)" if quick else "")
        + ". Command: `make bench`.",
        "",
        "Production profile: Feast Redis online store + SQL registry on PostgreSQL, real Triton"
        " (CPU, python backend), item_ranker, about 50 scalar features plus a 16-d text"
        " embedding and missing indicators per row. Each N draws random requests (distinct"
        " users and candidate sets) and every path sends the same ones: 1000 a path up to"
        " N = 100 and 300 above (the naive path 300, and 100 above N = 100), in 10 alternating"
        " blocks per path, so that every path sees the same machine conditions. In brackets: a"
        " 95% bootstrap interval of the gateway/floor ratio, how far it moves with the draw of"
        " requests alone.",
        "",
        "| N | gateway p50/p90/p99 | naive p50/p90/p99 | floor p50/p90/p99 | gRPC hop p50/p90/p99 |"
        " gateway/naive p99 | gateway/floor p99 (95% CI) | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    ok_all = True
    for r in rows:
        vs_naive = r["gateway_p99"] / r["naive_p99"]
        vs_floor = r["gateway_p99"] / r["floor_p99"]
        ok = vs_naive <= 0.5 and vs_floor <= 1.5
        ok_all &= ok
        fmt = "{:.1f} / {:.1f} / {:.1f}"
        cells = [
            fmt.format(r[f"{p}_p50"], r[f"{p}_p90"], r[f"{p}_p99"])
            for p in ("gateway", "naive", "floor", "hop")
        ]
        verdict = "met" if ok else "MISSED"
        low, high = r["floor_ratio_ci"]
        floor_cell = f"{vs_floor:.2f} ({low:.2f}-{high:.2f})"
        table.add_row(str(r["n"]), *cells, f"{vs_naive:.2f}", floor_cell, verdict)
        ratios = f"{vs_naive:.2f} | {floor_cell}"
        lines.append(f"| {r['n']} | " + " | ".join(cells) + f" | {ratios} | {verdict} |")
    console.print(table)

    stages = Table(title="gateway stages in process, ms (p50 / p90 / p99), uncached feature reads")
    for col in ("N", "features (Redis read + decode + TTL + on-demand)", "assembly", "inference",
                "gateway CPU / request"):  # fmt: skip
        stages.add_column(col, justify="right")
    lines += ["", "Gateway stages (in process, cache off), ms p50 / p90 / p99, and the serving"
              " gateway process's CPU time per request (all threads, ms):", "",
              "| N | features | assembly | inference | gateway CPU |",
              "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        cells = [
            f"{r[f'{s}_p50']:.1f} / {r[f'{s}_p90']:.1f} / {r[f'{s}_p99']:.1f}"
            for s in ("features", "assembly", "inference")
        ] + [f"{r['gateway_cpu_ms']:.2f}"]
        stages.add_row(str(r["n"]), *cells)
        lines.append(f"| {r['n']} | " + " | ".join(cells) + " |")
    console.print(stages)

    # One row per N and path, one column per concurrency; the gateway's cells also give its
    # share of the floor's throughput at the same concurrency.
    rps = {(t["n"], t["path"], t["concurrency"]): t["rps"] for t in throughput}
    failed: dict[tuple[int, str], int] = {}
    for t in throughput:
        failed[(t["n"], t["path"])] = failed.get((t["n"], t["path"]), 0) + t["errors"]
    heads = [f"c = {c}" for c in CONCURRENCY]
    tp = Table(title="throughput, requests/s (closed loop); gateway: its share of the floor's")
    for col in ("N", "path", *heads, "errors"):
        tp.add_column(col, justify="right")
    lines += ["", "Throughput (closed loop, requests/s; for the gateway, in brackets, its share"
              " of the floor's at the same concurrency):", "",
              "| N | path | " + " | ".join(heads) + " | errors |",
              "|---|---|" + "---|" * len(heads) + "---|"]  # fmt: skip
    for n, path in dict.fromkeys((t["n"], t["path"]) for t in throughput):
        cells = []
        for c in CONCURRENCY:
            value = rps.get((n, path, c))
            floor = rps.get((n, "floor", c))
            cell = "-" if value is None else f"{value:.1f}"
            if path == "gateway" and value is not None and floor:
                cell += f" ({value / floor:.2f}x)"
            cells.append(cell)
        tp.add_row(str(n), path, *cells, str(failed[(n, path)]))
        lines.append(f"| {n} | {path} | " + " | ".join(cells) + f" | {failed[(n, path)]} |")
    console.print(tp)
    lines += ["", f"Targets (p99 <= 0.5x naive and <= 1.5x floor at every N): "
              f"{'met' if ok_all else 'missed'}.", ""]  # fmt: skip
    (ROOT / "bench" / "RESULTS.md").write_text("\n".join(lines))
    console.print(f"wrote bench/RESULTS.md; targets {'met' if ok_all else 'MISSED'}")
    return 0 if ok_all else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and shorter runs")
    args = parser.parse_args()
    raise SystemExit(run(args.quick))


if __name__ == "__main__":
    main()
