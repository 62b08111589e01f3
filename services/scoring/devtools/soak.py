"""Soak-run bookkeeping (bench/soak.py): a process's memory, file descriptors and threads read
from /proc, the gateway's queue gauges read from its /metrics, and the bounds a run is judged
by, each PASS or FAIL. The reliability harness reads the gateway's metrics and Triton's process
tree with the same functions."""

from __future__ import annotations

import os
import urllib.request
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prometheus_client.parser import text_string_to_metric_families

PROC = Path("/proc")


@dataclass(frozen=True, slots=True)
class ProcessSample:
    """What a process (with `tree`: and every descendant, summed) holds at one moment."""

    rss_bytes: int
    fds: int
    threads: int
    processes: int = 1
    cpu_s: float = 0.0  # user + system CPU time used so far


def _status(pid: int) -> dict[str, str]:
    fields = {}
    for line in (PROC / str(pid) / "status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def descendants(pid: int) -> list[int]:
    """Every live descendant of `pid` (children, their children, ...), from /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone since the listing
            continue
        # The command name (field 2) is in parentheses and may hold spaces: parse after it.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def sample_process(pid: int, tree: bool = False) -> ProcessSample:
    """Resident memory (VmRSS), open file descriptors and threads of `pid`; with `tree`, summed
    over it and its descendants (Triton and its python backend stubs).

    Raises:
        ProcessLookupError: `pid` does not exist.
    """
    rss = fds = threads = count = 0
    ticks = 0
    for i, p in enumerate([pid, *(descendants(pid) if tree else [])]):
        try:
            status = _status(p)
            open_fds = len(os.listdir(PROC / str(p) / "fd"))
            # Fields 14 and 15 of stat (utime, stime), counted after the parenthesized name.
            stat = (PROC / str(p) / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            if i == 0:
                raise ProcessLookupError(pid) from None
            continue  # a descendant that exited meanwhile
        rss += int(status.get("VmRSS", "0 kB").split()[0]) * 1024  # absent for zombies
        threads += int(status["Threads"])
        fds += open_fds
        ticks += int(stat[11]) + int(stat[12])
        count += 1
    return ProcessSample(rss, fds, threads, count, ticks / os.sysconf("SC_CLK_TCK"))


def _tcp_peers(pid: int) -> dict[str, str]:
    """Socket inode -> `tcp :PORT` (a listening socket: its own port) or `tcp ->:PORT` (a
    connection: its peer's port), from the process's /proc/PID/net/tcp and tcp6."""
    peers = {}
    for table in ("tcp", "tcp6"):
        try:
            rows = (PROC / str(pid) / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            listening = state == "0A"
            port = int((local if listening else remote).rsplit(":", 1)[1], 16)
            peers[inode] = f"tcp :{port}" if listening else f"tcp ->:{port}"
    return peers


def fd_kinds(pid: int) -> Counter[str]:
    """The open file descriptors of `pid` by what they point at: `tcp ->:6379` (connections,
    by the peer's port), `tcp :PORT` (listening), `socket` (other sockets), `pipe`,
    `anon_inode:[eventpoll]` ..., `/dev/...`, `file`."""
    peers = _tcp_peers(pid)
    kinds: Counter[str] = Counter()
    folder = PROC / str(pid) / "fd"
    for fd in os.listdir(folder):
        try:
            target = os.readlink(folder / fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            kinds[peers.get(target[8:-1], "socket")] += 1
        elif target.startswith("pipe:"):
            kinds["pipe"] += 1
        elif target.startswith(("anon_inode:", "/dev/")):
            kinds[target] += 1
        else:
            kinds["file"] += 1
    return kinds


def parse_metrics(text: str, labels: Mapping[str, str] | None = None) -> dict[str, float]:
    """Prometheus text exposition -> value per sample name, summed over its label sets (e.g.
    `scoring_events_dropped_total` over every kind and reason), or over those that carry
    `labels`."""
    wanted = (labels or {}).items()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if all(sample.labels.get(k) == v for k, v in wanted):
                values[sample.name] = values.get(sample.name, 0.0) + float(sample.value)
    return values


def scrape_metrics(
    url: str, timeout_s: float = 5.0, labels: Mapping[str, str] | None = None
) -> dict[str, float]:
    """`parse_metrics` of what `url` (a /metrics endpoint) serves now."""
    with urllib.request.urlopen(url, timeout=timeout_s) as response:
        return parse_metrics(response.read().decode(), labels)


Check = Literal["growth", "max", "min", "sum"]


@dataclass(frozen=True, slots=True)
class Bound:
    """What one column of a run's samples must do, from its first sample after the warm-up to
    its last:

    - growth: last - first <= max(limit, relative x first) (memory, descriptors, threads);
    - max: every value <= limit (queue depths, cumulative drop counters);
    - min: every value >= limit (the request rate the run kept up);
    - sum: the values add up to <= limit (failed requests per interval).
    """

    label: str
    column: str
    check: Check
    limit: float
    relative: float = 0.0
    unit: str = ""

    def describe(self) -> str:
        limit = _number(self.limit, self.unit)
        if self.check == "growth":
            if self.relative:
                return f"growth <= {limit} or {self.relative:.0%}"
            return f"growth <= {limit}"
        return {"max": "max <= ", "min": "min >= ", "sum": "total <= "}[self.check] + limit


@dataclass(frozen=True, slots=True)
class Verdict:
    """A bound, the first and last values of its column and what was measured against it."""

    bound: Bound
    first: float
    last: float
    measured: float
    ok: bool

    @property
    def status(self) -> str:
        return "PASS" if self.ok else "FAIL"


def _number(value: float, unit: str = "") -> str:
    text = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
    return f"{text} {unit}".strip()


def judge(samples: Sequence[Mapping[str, float]], bounds: Sequence[Bound]) -> list[Verdict]:
    """Each bound checked on `samples` (the ones after the warm-up, oldest first).

    Raises:
        ValueError: no samples, or a bound names a column the samples lack.
    """
    if not samples:
        raise ValueError("no samples to judge: the run ended inside its warm-up")
    verdicts = []
    for bound in bounds:
        try:
            values = [float(s[bound.column]) for s in samples]
        except KeyError:
            raise ValueError(f"no column {bound.column!r} in the samples") from None
        first, last = values[0], values[-1]
        if bound.check == "growth":
            measured = last - first
            ok = measured <= max(bound.limit, bound.relative * first)
        elif bound.check == "max":
            measured = max(values)
            ok = measured <= bound.limit
        elif bound.check == "min":
            measured = min(values)
            ok = measured >= bound.limit
        else:
            measured = sum(values)
            ok = measured <= bound.limit
        verdicts.append(Verdict(bound, first, last, measured, ok))
    return verdicts


def describe_measured(verdict: Verdict) -> str:
    """The measured value as the bound reads it (a growth with its sign and share)."""
    bound = verdict.bound
    text = _number(verdict.measured, bound.unit)
    if bound.check == "growth":
        share = f" ({verdict.measured / verdict.first:+.1%})" if verdict.first else ""
        return ("+" if verdict.measured >= 0 else "") + text + share
    return text
