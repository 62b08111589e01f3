"""Gateway throughput with 1 and 2 worker processes on one port (GatewaySettings.workers).

One stack (bench/gateway_bench.py's Stack: Feast Redis online store + SQL registry on
PostgreSQL, real Triton), two gateways side by side on it: one plain process, and one parent
with 2 workers sharing its port (SO_REUSEPORT). Closed-loop clients: CLIENT_PROCS processes of
THREADS threads each, every thread on a connection of its own (the kernel gives each new
connection to one worker), send 1 user x N candidates Rank requests back to back. The two
gateways are measured in alternating blocks (ROUNDS of them), so both see the same machine.

Prints a table (requests/s, the 2-worker/1-worker ratio, where the CPU went) and writes
bench/WORKERS.md. The issue's target: 2 workers at N = 10 >= 1.6x one worker. On a 2-core
machine the clients and Triton share the cores with the gateways: the figures say how much a
second worker gains here, not on a host with a core per worker.
Run: `.venv/bin/python bench/gateway_workers_bench.py` (needs Redis on 127.0.0.1:6379 and
PostgreSQL on 127.0.0.1:5432, like bench/gateway_bench.py).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import shutil
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gateway_bench import ROOT, Stack, machine  # noqa: E402

from scoring.devtools.local_stack import free_port, free_ports  # noqa: E402
from scoring.gateway.process import GatewayProcess  # noqa: E402

SIZES = (10, 100)
CLIENT_PROCS = 2
THREADS = 8
console = Console(width=140)


def client(inbox: Any, outbox: Any, threads: int) -> None:
    """One client process, kept for the whole run: per job (address, requests, start, stop),
    `threads` closed loops, each on a connection of its own; puts (answered, errors)."""
    import grpc

    from scoring.api.v1 import scoring_pb2 as pb
    from scoring.api.v1 import scoring_pb2_grpc as pb_grpc

    while (job := inbox.get()) is not None:
        address, requests, start_at, stop_at = job
        messages = [
            pb.RankRequest(
                user_id=user,
                candidates=[pb.Candidate(id=c, type=pb.CANDIDATE_TYPE_ITEM) for c in ids],
                keep_unavailable=True,
            )
            for user, ids in requests
        ]
        done, errors = [0] * threads, [0] * threads

        def loop(k: int, messages: list[Any] = messages) -> None:
            # A channel of its own (no shared subchannel): a connection of its own.
            channel = grpc.insecure_channel(
                address, options=[("grpc.use_local_subchannel_pool", 1)]
            )
            stub = pb_grpc.RankingServiceStub(channel)  # type: ignore[no-untyped-call]
            stub.Rank(messages[k % len(messages)], timeout=30)  # connected before the clock
            while time.time() < start_at:
                time.sleep(0.001)
            i = k
            while time.time() < stop_at:
                try:
                    stub.Rank(messages[i % len(messages)], timeout=30)
                    done[k] += 1
                except grpc.RpcError:
                    errors[k] += 1
                i += threads
            channel.close()

        loops = [threading.Thread(target=loop, args=(k,)) for k in range(threads)]
        for t in loops:
            t.start()
        for t in loops:
            t.join()
        outbox.put((sum(done), sum(errors)))


class Clients:
    """CLIENT_PROCS client processes (spawned once: their imports stay out of the blocks)."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")
        self.outbox = ctx.Queue()
        self.inboxes = [ctx.Queue() for _ in range(CLIENT_PROCS)]
        self.procs = [
            ctx.Process(target=client, args=(inbox, self.outbox, THREADS), daemon=True)
            for inbox in self.inboxes
        ]
        for p in self.procs:
            p.start()

    def close(self) -> None:
        for inbox in self.inboxes:
            inbox.put(None)
        for p in self.procs:
            p.join(30)


def process_tree(proc: Any) -> list[psutil.Process]:
    """A child process (Popen or multiprocessing) and its descendants."""
    parent = psutil.Process(proc.pid)
    return [parent, *parent.children(recursive=True)]


def cpu_s(procs: list[psutil.Process]) -> float:
    return sum(sum(p.cpu_times()[:2]) for p in procs)


def busy_s() -> float:
    """CPU seconds this machine spent not idle (every process, the CI run beside us too)."""
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


def measure(
    clients: Clients,
    gateway: GatewayProcess,
    triton: Any,
    requests: list[tuple[str, list[str]]],
    duration: float,
) -> dict[str, float]:
    """One closed-loop block: requests answered, errors, seconds, and the CPU seconds spent by
    the gateway's processes, Triton's, the clients' and the whole machine."""
    start_at = time.time() + 1.0  # the clients' connections first
    stop_at = start_at + duration
    for i, inbox in enumerate(clients.inboxes):
        inbox.put((gateway.address, requests[i::CLIENT_PROCS], start_at, stop_at))
    trees = {
        "gateway": process_tree(gateway.process),
        "triton": process_tree(triton.process),
        "clients": [p for c in clients.procs for p in process_tree(c)],
    }
    time.sleep(max(start_at - time.time(), 0))
    before = {k: cpu_s(v) for k, v in trees.items()} | {"machine": busy_s()}
    time.sleep(max(stop_at - time.time(), 0))
    after = {k: cpu_s(v) for k, v in trees.items()} | {"machine": busy_s()}
    results = [clients.outbox.get(timeout=120) for _ in clients.inboxes]
    out = {k: after[k] - before[k] for k in after}
    out.update(answered=sum(r[0] for r in results), errors=sum(r[1] for r in results))
    out["seconds"] = duration
    return out


def run(quick: bool) -> int:
    work = Path(tempfile.mkdtemp(prefix="scoring-workers-bench-"))
    stack = Stack(work, n_items=1100, n_users=600)
    rounds, duration = (2, 3.0) if quick else (4, 6.0)
    rows: list[dict[str, Any]] = []
    two: GatewayProcess | None = None
    clients = Clients()
    try:
        stack.build()
        assert stack.gateway is not None
        settings = stack.settings.model_copy(deep=True)
        settings.gateway.workers = 2
        settings.gateway.port = free_port()
        settings.gateway.metrics_port = free_ports(2)
        settings.gateway.events_dir = work / "events-2"
        two = GatewayProcess(settings, log_path=work / "gateway-2-workers.log")
        two.start()
        two.wait_ready(120)
        time.sleep(3.0)  # both workers serving (the health check reached one of them)
        gateways = {1: stack.gateway, 2: two}
        rng = np.random.default_rng(0)
        items = [f"i_{i:06d}" for i in range(stack.n_items)]
        users = [f"u_{i:06d}" for i in range(stack.n_users)]
        for n in SIZES:
            requests = [
                (users[int(rng.integers(len(users)))], list(rng.choice(items, n, replace=False)))
                for _ in range(400)
            ]
            for gateway in gateways.values():  # warm: caches, connections
                measure(clients, gateway, stack.triton, requests, 1.0)
            blocks: dict[int, list[dict[str, float]]] = {1: [], 2: []}
            for r in range(rounds):
                order = (1, 2) if r % 2 == 0 else (2, 1)
                for workers in order:
                    with console.status(f"N={n}: {workers} worker(s), round {r + 1}/{rounds}"):
                        blocks[workers].append(
                            measure(clients, gateways[workers], stack.triton, requests, duration)
                        )
            for workers, results in blocks.items():
                seconds = sum(b["seconds"] for b in results)
                row: dict[str, Any] = {
                    "n": n,
                    "workers": workers,
                    "rps": sum(b["answered"] for b in results) / seconds,
                    "rounds": [b["answered"] / b["seconds"] for b in results],
                    "errors": int(sum(b["errors"] for b in results)),
                }
                for key in ("gateway", "triton", "clients", "machine"):
                    row[key] = sum(b[key] for b in results) / seconds
                rows.append(row)
    finally:
        clients.close()
        if two is not None:
            two.stop()
        stack.close()
        shutil.rmtree(work, ignore_errors=True)
    return report(rows, quick, rounds, duration)


def report(rows: list[dict[str, Any]], quick: bool, rounds: int, duration: float) -> int:
    rps = {(r["n"], r["workers"]): r["rps"] for r in rows}
    load = psutil.getloadavg()
    table = Table(title="gateway throughput, 1 vs 2 workers on one port (closed loop, req/s)")
    heads = ("N", "workers", "req/s", "per block", "vs 1 worker", "gateway CPU", "Triton CPU",
             "clients CPU", "machine busy", "errors")  # fmt: skip
    for col in heads:
        table.add_column(col, justify="right")
    lines = [
        "# Gateway workers benchmark",
        "",
        f"Machine: {machine()}. Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
        + (" (--quick)" if quick else "")
        + f"; load average at the end {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (the"
        " machine was shared with another job). Command:"
        " `.venv/bin/python bench/gateway_workers_bench.py`.",
        "",
        "Production profile (Redis online store, SQL registry on PostgreSQL, real Triton on"
        " CPU), item_ranker, 1 user x N random candidates. Two gateways on the same stack: one"
        " process, and a parent with 2 workers sharing one port (SO_REUSEPORT). Closed loop:"
        f" {CLIENT_PROCS} client processes x {THREADS} threads, each thread on a connection of"
        f" its own; {rounds} alternating blocks of {duration:g} s per gateway. CPU columns:"
        " cores busy on average (CPU seconds per second) for the gateway's processes, Triton's,"
        " the clients', and the whole machine (every process, anything else running"
        " included; 2.00 = both cores saturated).",
        "",
        "| " + " | ".join(heads) + " |",
        "|" + "---|" * len(heads),
    ]
    met = True
    for r in rows:
        ratio = r["rps"] / rps[(r["n"], 1)]
        if r["n"] == 10 and r["workers"] == 2:
            met = ratio >= 1.6
        cells = [
            str(r["n"]),
            str(r["workers"]),
            f"{r['rps']:.1f}",
            " / ".join(f"{x:.0f}" for x in r["rounds"]),
            f"{ratio:.2f}x",
            *(f"{r[k]:.2f}" for k in ("gateway", "triton", "clients", "machine")),
            str(r["errors"]),
        ]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    verdict = "met" if met else "MISSED"
    lines += ["", f"Target (2 workers at N = 10 >= 1.6x one worker): {verdict}.", ""]
    (ROOT / "bench" / "WORKERS.md").write_text("\n".join(lines))
    console.print(f"wrote bench/WORKERS.md; target {verdict}")
    return 0 if met else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter blocks")
    args = parser.parse_args()
    raise SystemExit(run(args.quick))


if __name__ == "__main__":
    main()
