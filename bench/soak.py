"""Soak: the gateway and Triton under a steady load for a bounded time, their resources sampled
as they go and each judged against a stated bound.

Brings up the production profile as `make bench` does (bench/gateway_bench.py's Stack: Feast
Redis online store + SQL registry on PostgreSQL, real Triton, the gateway as a child process),
with every request written to the served-feature log and the event log. Then it sends --rate
Rank requests a second (open loop: on schedule, however long answers take; scoring.devtools.load)
of --candidates random items for a random user, for --minutes, and a Feedback click on the top
candidate for a --feedback share of the answers. Every --interval seconds it samples the
gateway's and Triton's (with its python backend stubs) resident memory, open file descriptors
and threads from /proc, the feature-log and event-log queues from the gateway's /metrics, and
the requests sent, ok, degraded and failed in the interval.

Samples inside the first --warmup seconds are shown, not judged; from the first sample after it
to the last, each resource is held to a bound (growth of memory, descriptors and threads, queue
depth, drops, failures, the rate kept). Prints the series and the verdicts, writes bench/SOAK.md
and exits 1 when a bound fails. Run: `make bench-soak` (`SOAK_ARGS="--minutes 1"` for a short
run). Needs Redis on 127.0.0.1:6379 and PostgreSQL on 127.0.0.1:5432.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from gateway_bench import REDIS, ROOT, Stack, machine
from rich.console import Console
from rich.table import Table

from scoring.core.settings import GatewaySettings
from scoring.devtools.load import DEGRADED, ERROR, LoadRunner, LoadShape, RankRecord, unique_prefix
from scoring.devtools.soak import (
    Bound,
    Verdict,
    describe_measured,
    fd_kinds,
    judge,
    sample_process,
    scrape_metrics,
)
from scoring.gateway.redis_source import ASYNC_MAX_CONNECTIONS

console = Console(width=200)
MIB = 2**20
EARLIER = "\n## Other runs"

# (column, heading, format) of the series table, in order.
COLUMNS = (
    ("t_s", "t s", "{:.0f}"),
    ("sent", "sent", "{:.0f}"),
    ("ok", "ok", "{:.0f}"),
    ("degraded", "degr.", "{:.0f}"),
    ("failed", "failed", "{:.0f}"),
    ("feedback", "fb", "{:.0f}"),
    ("p99_ms", "p99 ms", "{:.1f}"),
    ("gateway_cpu_pct", "gw CPU %", "{:.0f}"),
    ("gateway_rss_mib", "gw RSS MiB", "{:.1f}"),
    ("gateway_fds", "gw fds", "{:.0f}"),
    ("gateway_redis_conns", "of which Redis", "{:.0f}"),
    ("gateway_threads", "gw thr", "{:.0f}"),
    ("triton_cpu_pct", "Tr CPU %", "{:.0f}"),
    ("triton_rss_mib", "Triton RSS MiB", "{:.1f}"),
    ("triton_fds", "Tr fds", "{:.0f}"),
    ("triton_threads", "Tr thr", "{:.0f}"),
    ("feature_log_pending_rows", "FL queue rows", "{:.0f}"),
    ("events_queued", "ev queue", "{:.0f}"),
    ("events_written", "ev written", "{:.0f}"),
    ("load_1m", "host load", "{:.1f}"),
)


@dataclass
class Tally:
    """The load's figures interval by interval: the requests sent since the last call, and the
    answers and Feedback calls that came back since (each counted once)."""

    load: LoadRunner
    sent: int = 0  # records counted as sent so far
    unanswered: list[RankRecord] = field(default_factory=list)
    feedback: int = 0  # Feedback records counted so far

    def interval(self) -> dict[str, float]:
        sent = self.load.records[self.sent :]
        self.sent += len(sent)
        pending, answered, self.unanswered = [*self.unanswered, *sent], [], []
        for record in pending:
            (answered if record.answered is not None else self.unanswered).append(record)
        clicks = self.load.feedback[self.feedback :]
        self.feedback += len(clicks)
        ok = [r for r in answered if r.answered_ok]
        latencies = np.array([r.latency_s for r in ok] or [0.0]) * 1000
        return {
            "sent": len(sent),
            "ok": len(ok),
            "degraded": sum(r.outcome == DEGRADED for r in ok),
            "failed": sum(r.outcome == ERROR for r in answered),
            "feedback": len(clicks),
            "feedback_failed": sum(f.code != "OK" for f in clicks),
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)),
        }


def error_codes(load: LoadRunner) -> Counter[str]:
    """The gRPC errors of the run, Rank's and Feedback's."""
    codes = Counter(r.code for r in load.records if r.outcome == ERROR)
    codes.update(f"feedback {f.code}" for f in load.feedback if f.code != "OK")
    return codes


def resources(
    gateway_pid: int, triton_pid: int, metrics_url: str
) -> tuple[dict[str, float], Counter[str]]:
    """The processes' resources (read before the scrape, which opens a connection to the
    gateway), the gateway's queue gauges and counters, and its descriptors by kind."""
    kinds = fd_kinds(gateway_pid)
    gateway = sample_process(gateway_pid)
    triton = sample_process(triton_pid, tree=True)
    metrics = scrape_metrics(metrics_url)
    # The Redis client's pool grows with the requests in flight, up to its cap: judged apart.
    redis = kinds[f"tcp ->:{REDIS.rsplit(':', 1)[1]}"]
    sample = {
        "gateway_cpu_s": gateway.cpu_s,
        "gateway_rss_mib": gateway.rss_bytes / MIB,
        "gateway_fds": gateway.fds,
        "gateway_redis_conns": redis,
        "gateway_other_fds": gateway.fds - redis,
        "gateway_threads": gateway.threads,
        "triton_cpu_s": triton.cpu_s,
        "triton_rss_mib": triton.rss_bytes / MIB,
        "triton_fds": triton.fds,
        "triton_threads": triton.threads,
        "triton_processes": triton.processes,
        "feature_log_pending_rows": metrics.get("scoring_feature_log_pending_rows", 0.0),
        "feature_log_dropped_rows": metrics.get("scoring_feature_log_dropped_rows_total", 0.0),
        "feature_log_rows_written": metrics.get("scoring_feature_log_rows_total", 0.0),
        "events_queued": metrics.get("scoring_events_queued", 0.0),
        "events_queued_mib": metrics.get("scoring_events_queued_bytes", 0.0) / MIB,
        "events_written": metrics.get("scoring_events_written_total", 0.0),
        "events_dropped": metrics.get("scoring_events_dropped_total", 0.0),
        # The host's 1-minute load average: other work on the machine slows the answers.
        "load_1m": float(Path("/proc/loadavg").read_text().split()[0]),
    }
    return sample, kinds


def soak(
    load: LoadRunner, duration_s: float, interval_s: float, pids: tuple[int, int], metrics_url: str
) -> tuple[list[dict[str, float]], list[Counter[str]]]:
    """Runs `load` for `duration_s`, one sample every `interval_s` (the last at the end);
    returns the samples and the gateway's descriptors by kind at each."""
    samples: list[dict[str, float]] = []
    kinds: list[Counter[str]] = []
    previous, _ = resources(*pids, metrics_url)
    tally = Tally(load)
    ticks = max(round(duration_s / interval_s), 1)
    with load:
        start = last = time.monotonic()
        for k in range(1, ticks + 1):
            time.sleep(max(start + k * duration_s / ticks - time.monotonic(), 0))
            if k == ticks:
                load.stop_sending()  # answers still in flight count in this last interval
            now = time.monotonic()
            done = tally.interval()
            sample, fds = resources(*pids, metrics_url)
            kinds.append(fds)
            sample |= {"t_s": now - start, "rate": done["sent"] / (now - last), **done}
            for name in ("gateway", "triton"):
                spent = sample[f"{name}_cpu_s"] - previous[f"{name}_cpu_s"]
                sample[f"{name}_cpu_pct"] = 100 * spent / (now - last)
            last, previous = now, sample
            samples.append(sample)
            console.print(
                f"t={sample['t_s']:.0f}s sent={done['sent']} ok={done['ok']} "
                f"failed={done['failed']} gw_rss={sample['gateway_rss_mib']:.1f}MiB "
                f"gw_fds={sample['gateway_fds']:.0f} "
                f"gw_threads={sample['gateway_threads']:.0f} "
                f"fl_queue={sample['feature_log_pending_rows']:.0f} "
                f"ev_queue={sample['events_queued']:.0f}"
            )
    # Answers that came after the last sample: their outcome counts, in the last interval.
    rest = tally.interval()
    for name in ("ok", "degraded", "failed", "feedback", "feedback_failed"):
        samples[-1][name] += rest[name]
    return samples, kinds


def bounds(rate: float, gateway: GatewaySettings) -> list[Bound]:
    """The stated bounds. Memory may settle (caches, the Feedback match window, allocator
    pools), so it gets an allowance; descriptors and threads get a few (a scrape's connection,
    an executor thread started late); a queue that keeps up never nears its bound."""
    fl_limit = gateway.feature_log_max_rows // 4
    ev_limit = gateway.events_max_queued_mib / 4
    return [
        Bound("gateway RSS", "gateway_rss_mib", "growth", 64, relative=0.10, unit="MiB"),
        Bound("gateway open fds besides Redis", "gateway_other_fds", "growth", 4),
        Bound("gateway Redis connections", "gateway_redis_conns", "max", ASYNC_MAX_CONNECTIONS),
        Bound("gateway threads", "gateway_threads", "growth", 4),
        Bound("Triton RSS (+ stubs)", "triton_rss_mib", "growth", 64, relative=0.10, unit="MiB"),
        Bound("Triton open fds (+ stubs)", "triton_fds", "growth", 4),
        Bound("Triton threads (+ stubs)", "triton_threads", "growth", 4),
        Bound("feature-log queue (rows)", "feature_log_pending_rows", "max", fl_limit),
        Bound("event-log queue", "events_queued_mib", "max", ev_limit, unit="MiB"),
        Bound("feature-log rows dropped", "feature_log_dropped_rows", "max", 0),
        Bound("events dropped", "events_dropped", "max", 0),
        Bound("failed Rank requests", "failed", "sum", 0),
        Bound("failed Feedback requests", "feedback_failed", "sum", 0),
        Bound("Rank requests sent /s", "rate", "min", 0.9 * rate),
    ]


def fd_change(first: Counter[str], last: Counter[str]) -> str:
    """What changed between two descriptor breakdowns: `tcp ->:6379 12 -> 18, ...`."""
    changed = [
        f"{kind} {first[kind]} -> {last[kind]}"
        for kind in sorted(set(first) | set(last))
        if first[kind] != last[kind]
    ]
    return ", ".join(changed) or "none"


def report(
    args: argparse.Namespace,
    samples: list[dict[str, float]],
    kinds: list[Counter[str]],
    verdicts: list[Verdict],
    codes: Counter[str],
    build_s: float,
) -> bool:
    passed = all(v.ok for v in verdicts)
    series = Table(title="soak series (one row per interval; * = warm-up, not judged)")
    for _, heading, _ in COLUMNS:
        series.add_column(heading, justify="right")
    lines = [
        "# Soak",
        "",
        f"Machine: {machine()}. Run: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Command: "
        f"`make bench-soak` (`bench/soak.py --rate {args.rate:g} --minutes {args.minutes:g} "
        f"--interval {args.interval:g} --warmup {args.warmup:g} --candidates "
        f"{args.candidates} --feedback {args.feedback:g}`).",
        "",
        "Production profile (Feast Redis online store, SQL registry on PostgreSQL, real Triton"
        " on the CPU with its python backend stubs, the gateway as a child process), every"
        " request written to the served-feature log and the event log. Open-loop load:"
        f" {args.rate:g} Rank requests/s of {args.candidates} random items for a random user"
        f" (top 20, {args.deadline_ms} ms deadline), a Feedback click on the top candidate"
        f" for {args.feedback:.0%} of the answers. A sample every {args.interval:g} s: resident"
        " memory, open file descriptors (/proc/PID/fd) and threads (/proc/PID/status) of the"
        " gateway and of Triton with its stub processes (summed), the gateway's queues from its"
        " /metrics, and the requests of the interval. Samples in the first"
        f" {args.warmup:g} s are warm-up (marked *), not judged. Stack built in {build_s:.0f} s"
        " (data, Feast apply + materialize, training, start-up).",
        "",
        "| " + " | ".join(heading for _, heading, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for s in samples:
        cells = [fmt.format(s[column]) for column, _, fmt in COLUMNS]
        if s["t_s"] <= args.warmup:
            cells[0] += "*"
        series.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(series)

    verdict_table = Table(title="bounds: first sample after the warm-up -> last")
    for heading in ("resource", "first", "last", "measured", "bound", "verdict"):
        verdict_table.add_column(heading, justify="right")
    lines += [
        "",
        "Bounds, from the first sample after the warm-up to the last:",
        "",
        "| resource | first | last | measured | bound | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for v in verdicts:
        cells = [
            v.bound.label,
            f"{v.first:,.1f}",
            f"{v.last:,.1f}",
            describe_measured(v),
            v.bound.describe(),
            v.status,
        ]
        style = "green" if v.ok else "bold red"
        verdict_table.add_row(*cells[:-1], f"[{style}]{v.status}[/]")
        lines.append("| " + " | ".join(cells) + " |")
    console.print(verdict_table)
    judged = [i for i, s in enumerate(samples) if s["t_s"] > args.warmup]
    first, last = kinds[judged[0]], kinds[-1]
    descriptors = (
        "Gateway descriptors by kind at the first judged sample: "
        + ", ".join(f"{k} {n}" for k, n in sorted(first.items()))
        + f"; changed by the last: {fd_change(first, last)}; "
        f"by kind over the whole run (first sample -> last): {fd_change(kinds[0], last)}."
    )
    sent = sum(s["sent"] for s in samples)
    ok = sum(s["ok"] for s in samples)
    degraded = sum(s["degraded"] for s in samples)
    summary = (
        f"{sent:,.0f} Rank requests sent, {ok:,.0f} answered ({degraded:,.0f} degraded), "
        f"{sum(s['feedback'] for s in samples):,.0f} Feedback calls; p99 latency per interval "
        f"{min(samples[i]['p99_ms'] for i in judged):.1f}-"
        f"{max(samples[i]['p99_ms'] for i in judged):.1f} ms; "
        f"Triton ran {samples[-1]['triton_processes']:.0f} processes (server + stubs); "
        f"{samples[-1]['feature_log_rows_written']:,.0f} feature-log rows and "
        f"{samples[-1]['events_written']:,.0f} events written."
    )
    if codes:
        summary += " Errors: " + ", ".join(f"{k} x{n}" for k, n in codes.most_common()) + "."
    verdict = (
        "PASS: every bound held"
        if passed
        else "FAIL: " + ", ".join(v.bound.label for v in verdicts if not v.ok)
    )
    lines += ["", summary, "", descriptors, "", f"Verdict: {verdict}.", ""]
    console.print(summary, markup=False)
    console.print(descriptors, markup=False)
    out = ROOT / "bench" / "SOAK.md"
    # Notes on earlier runs, written by hand under this heading, are kept.
    earlier = out.read_text().partition(EARLIER)[2] if out.exists() else ""
    out.write_text("\n".join(lines) + (EARLIER + earlier if earlier else ""))
    console.print(f"wrote bench/SOAK.md; [{'green' if passed else 'bold red'}]{verdict}[/]")
    return passed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="Rank requests a second")
    parser.add_argument("--minutes", type=float, default=3.0, help="load duration, warm-up in")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds not judged")
    parser.add_argument("--candidates", type=int, default=100, help="candidates per request")
    parser.add_argument("--feedback", type=float, default=0.2, help="share of answers clicked")
    parser.add_argument("--deadline-ms", type=int, default=1000, help="each call's deadline")
    args = parser.parse_args()
    if args.minutes * 60 <= args.warmup + args.interval:
        parser.error("--minutes must leave at least one --interval after the --warmup")

    work = Path(tempfile.mkdtemp(prefix="scoring-soak-"))
    # Every request in both logs, and the gateway's own deadlines (the latency bench's are
    # longer); the rest as `make bench` runs it.
    stack = Stack(
        work, n_items=1500, n_users=2000, feature_log_sample_rate=1.0,
        default_timeout_ms=GatewaySettings().default_timeout_ms,
        feature_timeout_ms=GatewaySettings().feature_timeout_ms,
    )  # fmt: skip
    try:
        started = time.monotonic()
        stack.build()
        build_s = time.monotonic() - started
        assert stack.gateway is not None and stack.triton is not None
        assert stack.gateway.process is not None and stack.triton.process is not None
        gw = stack.settings.gateway
        shape = LoadShape(
            tuple(f"u_{i:06d}" for i in range(stack.n_users)),
            tuple(f"i_{i:06d}" for i in range(stack.n_items)),
            rate_per_s=args.rate, deadline_s=args.deadline_ms / 1000,
            per_request=args.candidates, top_k=20, seed=0,
            feedback_every=round(1 / args.feedback) if args.feedback > 0 else 0,  # one in n
        )  # fmt: skip
        load = LoadRunner(stack.gateway.address, unique_prefix("soak"), shape)
        pids = (stack.gateway.process.pid, stack.triton.process.pid)
        metrics_url = f"http://{gw.host}:{gw.metrics_port}/metrics"
        console.print(
            f"soak: {args.rate:g} Rank/s for {args.minutes:g} min, a sample every "
            f"{args.interval:g} s (gateway pid {pids[0]}, Triton pid {pids[1]})"
        )
        samples, kinds = soak(load, args.minutes * 60, args.interval, pids, metrics_url)
    finally:
        stack.close()
        shutil.rmtree(work, ignore_errors=True)
    verdicts = judge([s for s in samples if s["t_s"] > args.warmup], bounds(args.rate, gw))
    codes = error_codes(load)
    raise SystemExit(0 if report(args, samples, kinds, verdicts, codes, build_s) else 1)


if __name__ == "__main__":
    main()
